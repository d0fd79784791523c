"""``tca4rec bench scale`` on small catalogs: every stage runs, the fit is right, bad options fail."""

from __future__ import annotations

import argparse
import json

import pytest

from tca4rec.bench import scale as bench_scale
from tca4rec.cli import build_parser
from tca4rec.errors import ConfigError


def parser() -> argparse.ArgumentParser:
    """The real command line (bench commands are registered by the CLI)."""
    return build_parser()


def test_fitted_line_recovers_an_exact_line():
    slope, intercept, residual = bench_scale.fitted_line([10, 20, 40], [1.5, 2.5, 4.5])
    assert slope == pytest.approx(0.1) and intercept == pytest.approx(0.5) and residual == pytest.approx(0, abs=1e-9)


def test_command_measures_every_stage_on_small_catalogs(tmp_path, capsys):
    out = tmp_path / "scale.json"
    args = parser().parse_args(["bench", "scale", "--items", "60,120", "--repeats", "1", "--rows", "4", "--batch", "3",
                                "--out", str(out)])
    assert args.func(args) == 0
    result = json.loads(out.read_text())
    assert [r["items"] for r in result["sizes"]] == [60, 120]
    for r in result["sizes"]:
        assert r["trie_nodes"] > r["items"] and r["labels_s"] > 0 and r["labels_item_order_s"] > 0
        assert r["beam_steps"] >= 1
        assert r["labels_peak_bytes"] > 0 and r["ranking_peak_bytes"] > 0
    assert "s_per_item" in result["labels_fit"]
    printed = capsys.readouterr()
    assert "fitted" in printed.out and "profiler" not in printed.out + printed.err


@pytest.mark.parametrize("items", ["abc", "5", ""])
def test_command_rejects_bad_sizes(items):
    args = parser().parse_args(["bench", "scale", "--items", items])
    with pytest.raises(ConfigError, match="--items"):
        args.func(args)
