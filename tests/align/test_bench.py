"""``tca4rec bench align``: the released-formulation baseline agrees, memory accounting, the command."""

from __future__ import annotations

import argparse
import json
import sys

import pytest
import torch

from tca4rec.align import CollaborativeTokenizer
from tca4rec.bench import align as bench_align
from tca4rec.cli import build_parser
from tca4rec.errors import ConfigError


def parser() -> argparse.ArgumentParser:
    """The real command line (bench commands are registered by the CLI)."""
    return build_parser()


def test_released_baseline_equals_ours_on_a_small_catalog(ref_labels):
    titles = [[1, 2, 3], [1, 2], [1, 2, 3], [1, 4], [5], [2, 2, 2, 2], [1, 2, 3, 4], [5, 1]]
    cf = torch.randn(3, len(titles), dtype=torch.float64)
    labels = CollaborativeTokenizer(titles, 0).soft_labels(cf, torch.tensor([0, 4, 6]), alpha=0.2)
    baseline = bench_align.ReleasedPairsTrie(titles, 0).soft_labels(cf.float(), labels.targets, 0.2, 6)
    expected, _ = ref_labels(titles, 0, cf, [0, 4, 6], 0.2, 1.0, 6)
    assert (baseline.double() - expected).abs().max() <= 1e-6


def test_peak_tensor_bytes_counts_live_allocations(capfd):
    def work() -> None:
        a = torch.ones(1000)  # 4000 B
        b = torch.ones(2000)  # 8000 B, both alive: peak 12000
        del a, b
        torch.ones(500)

    assert bench_align.peak_tensor_bytes(work) == 12_000
    out, err = capfd.readouterr()
    assert "profiler" not in out + err  # the profiler's own log lines are not for the user
    print("still here", file=sys.stderr)
    assert "still here" in capfd.readouterr().err  # stderr works again afterwards


def test_bench_on_a_real_catalog(office_dir, tokenizer):
    from tca4rec.data import load_dataset
    from tca4rec.llm.prompts import title_token_ids

    titles = title_token_ids(tokenizer, load_dataset(office_dir).titles[1:])
    result = bench_align.run_bench(titles, tokenizer.eos_token_id, len(tokenizer), batch=2, repeats=1, alpha=0.1,
                                   seed=0)
    assert result["items"] == 9913
    assert result["max_abs_diff"] <= 1e-6
    peak = result["peak_bytes"]
    # Sparse labels add no [B, L, V] tensor: at most a sliver over plain cross-entropy, and
    # the masked form never touches the full vocabulary except for the logits' gradient.
    assert peak["soft_mixture"] <= peak["plain_ce"] + result["logits_bytes"] // 10
    assert peak["soft_mixture_masked"] <= result["logits_bytes"] + result["logits_bytes"] // 10


def test_command_writes_json(synth_dir, tmp_path):
    out = tmp_path / "bench.json"
    args = parser().parse_args(["bench", "align", "--data", str(synth_dir), "--batch", "2", "--repeats", "1", "--out", str(out)])
    assert args.func(args) == 0
    result = json.loads(out.read_text())
    assert result["batch"] == 2 and result["max_abs_diff"] <= 1e-6
    assert set(result["peak_bytes"]) == {"plain_ce", "soft_mixture", "soft_mixture_masked"}


def test_command_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["bench", "align", "--help"])
    assert "examples:" in capsys.readouterr().out


@pytest.mark.parametrize("option", [["--batch", "0"], ["--repeats", "0"], ["--alpha", "2"]])
def test_command_rejects_bad_options(synth_dir, option):
    args = parser().parse_args(["bench", "align", "--data", str(synth_dir), *option])
    with pytest.raises(ConfigError):
        args.func(args)
