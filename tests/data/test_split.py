"""Row selection for evaluation: the first rows, or a seeded random sample that keeps each row's
number in the whole split (predictions record it, and runs are paired by it)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tca4rec.cf import evaluate_cf, train_cf
from tca4rec.errors import ConfigError


def test_seeded_sample_is_reproducible_sorted_and_keeps_row_numbers(synth_dataset):
    test = synth_dataset.split("test")
    sample = test.sample(25, seed=7)
    assert len(sample) == 25 and np.array_equal(sample.row_ids, np.sort(sample.row_ids))
    assert np.array_equal(sample.row_ids, test.sample(25, seed=7).row_ids)  # the same seed, the same rows
    assert not np.array_equal(sample.row_ids, test.sample(25, seed=8).row_ids)
    for r, row in enumerate(sample.row_ids):  # every field comes from the row it names
        assert sample.targets[r] == test.targets[row] and np.array_equal(sample.histories[r], test.histories[row])
    assert test.sample(None, seed=7) is test and test.select(5).row_ids.tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(sample.head(3).row_ids, sample.row_ids[:3])  # a head of a sample keeps the numbers


def test_cf_evaluation_of_a_sample_records_the_sampled_rows(synth_dataset, tmp_path):
    cf_run = train_cf(synth_dataset, "mostpop", tmp_path / "mostpop", progress=False)
    record = evaluate_cf(cf_run, synth_dataset, split="test", limit=12, sample_seed=3)
    assert record["rows"] == 12 and record["sample_seed"] == 3
    rows = [json.loads(line)["row"] for line in (cf_run / "predictions_test.jsonl").read_text().splitlines()]
    assert rows == synth_dataset.split("test").sample(12, seed=3).row_ids.tolist()


def test_a_sample_can_leave_out_the_rows_of_earlier_samples(synth_dataset, tmp_path):
    test = synth_dataset.split("test")
    earlier = [(20, 0), (30, 5)]
    taken = set(test.sample(20, 0).row_ids) | set(test.sample(30, 5).row_ids)
    fresh = test.sample(15, seed=1, exclude=earlier)
    assert len(fresh) == 15 and not taken & set(fresh.row_ids)  # disjoint from both earlier samples
    assert np.array_equal(fresh.row_ids, test.select(15, 1, earlier).row_ids)  # seeded: the same rows again
    assert set(test.sample(None, seed=1, exclude=earlier).row_ids) == set(test.row_ids) - taken
    assert np.array_equal(test.sample(15, seed=1, exclude=()).row_ids, test.sample(15, seed=1).row_ids)
    with pytest.raises(ConfigError, match="only .* rows .* left"):
        test.sample(len(test), seed=1, exclude=earlier)
    with pytest.raises(ConfigError, match="needs a sample seed"):
        test.select(5, None, earlier)
    for seed, exclude in ((-1, ()), (2**32, ()), (1, ((20, -5),))):  # numpy's error, from deep inside, before
        with pytest.raises(ConfigError, match="--sample-seed: .* is not a seed"):
            test.select(5, seed, exclude)
    cf_run = train_cf(synth_dataset, "mostpop", tmp_path / "mostpop", progress=False)
    record = evaluate_cf(cf_run, synth_dataset, split="test", limit=15, sample_seed=1, sample_exclude=earlier)
    assert record["sample_exclude"] == [[20, 0], [30, 5]]
    rows = [json.loads(line)["row"] for line in (cf_run / "predictions_test.jsonl").read_text().splitlines()]
    assert rows == fresh.row_ids.tolist()
