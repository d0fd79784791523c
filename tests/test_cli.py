"""The command-line core: every command documents itself, errors are one line (``--debug``: traceback)."""

from __future__ import annotations

import argparse

import pytest

from tca4rec.cli import build_parser, main
from tca4rec.errors import RunError


def leaf_commands(parser: argparse.ArgumentParser, path=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from leaf_commands(child, (*path, name))


def test_help_lists_every_group(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for group in ("data", "cf", "train", "evaluate", "recommend", "bench", "demo", "study", "report"):
        assert group in out


@pytest.mark.parametrize("path", [p for p, _ in leaf_commands(build_parser())], ids=" ".join)
def test_every_command_has_help_with_examples(path):
    parser = dict(leaf_commands(build_parser()))[path]
    text = parser.format_help()
    assert "examples:" in text and f"tca4rec {path[0]}" in text


def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    missing = str(tmp_path / "no_such_run")
    assert main(["evaluate", "--run", missing, "--split", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and missing in err and "\n" not in err
    with pytest.raises(RunError):
        main(["--debug", "evaluate", "--run", missing, "--split", "test"])
