"""Length-grouped batching: a seeded permutation per epoch that pads less than random batches,
and `tca4rec bench train`, which measures that on real training steps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tca4rec.cli import main
from tca4rec.llm.train import LengthGroupedRows


def padded_slots(order: list[int], lengths: list[int], batch: int) -> int:
    """Positions computed when each batch is padded to its longest row (the slow reference)."""
    return sum(max(lengths[i] for i in order[s:s + batch]) * len(order[s:s + batch])
               for s in range(0, len(order), batch))


def test_length_grouped_rows_are_seeded_per_epoch_and_pad_less():
    rng = np.random.default_rng(0)
    lengths = rng.integers(40, 260, 400).tolist()
    sampler = LengthGroupedRows(lengths, batch_size=8, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(400))  # every row once per epoch
    assert list(LengthGroupedRows(lengths, 8, seed=3)) == first  # a resumed run sees the same order
    sampler.set_epoch(1)
    assert list(sampler) != first  # and a new order each epoch
    random_orders = [rng.permutation(400).tolist() for _ in range(5)]
    random_slots = np.mean([padded_slots(o, lengths, 8) for o in random_orders])
    assert padded_slots(first, lengths, 8) < 0.85 * random_slots


def test_bench_train_reports_both_modes_on_the_same_rows(synth_dir, tiny_llm_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "train", "--data", str(synth_dir), "--llm", str(tiny_llm_dir), "--steps", "3",
                 "--batch-size", "4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    base, grouped = result["random"], result["grouped"]
    assert base["steps"] == grouped["steps"] == 3
    # The same 12 rows in both modes: the same real tokens (up to the EOS a row shorter than its
    # batch's longest title is also fed), fewer padded ones when grouped.
    assert grouped["real_tokens_per_step"] == pytest.approx(base["real_tokens_per_step"], rel=0.02)
    # 12 short synthetic rows of similar length: the shares are measured, their order is not
    # meaningful at this size (the padding saving is checked on the sampler above).
    assert 0 < base["real_token_share"] <= 1 and 0 < grouped["real_token_share"] <= 1
    assert result["speedup_real_tokens_per_s"] > 0
    assert "length grouping:" in capsys.readouterr().out
