"""Reports from run folders: per-row ranks, paired comparison, collaborative consistency."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tca4rec.errors import RunError
from tca4rec.evaluate.report import collaborative_consistency, compare, load_run_result, metrics_table


def write_run(folder, rows, targets, items):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": "x"}))
    with (folder / "predictions_test.jsonl").open("w") as f:
        for r, t, its in zip(rows, targets, items):
            f.write(json.dumps({"row": r, "user": 0, "target": t, "items": its, "scores": [0.0] * len(its)}) + "\n")


def test_run_results_are_aligned_by_row_and_compared(tmp_path):
    group = np.arange(21)
    group[12] = 2  # item 12 has the same title as item 2
    write_run(tmp_path / "cf", [1, 0], [3, 2], [[3, 4, 5], [12, 1, 5]])
    write_run(tmp_path / "llm", [0, 1], [2, 3], [[1, 2, 4], [5, 6, 7]])
    cf = load_run_result(tmp_path / "cf", "test", group)
    llm = load_run_result(tmp_path / "llm", "test", group)
    assert cf.ranks.tolist() == [1, 1]  # row 0 hits through the identical title of item 12
    assert llm.ranks.tolist() == [2, 0]
    # shared items per row (items, not titles): row 0 {1}, row 1 {5}; each over 10 slots
    assert collaborative_consistency(llm, cf) == pytest.approx((1 / 10 + 1 / 10) / 2)
    c = compare(cf, llm, "HR@1")
    assert c["diff"] == pytest.approx(-1.0) and c["rows"] == 2
    assert "| cf | 2 |" in metrics_table([cf, llm])


def test_runs_on_different_targets_are_refused(tmp_path):
    group = np.arange(10)
    write_run(tmp_path / "a", [0], [3], [[3]])
    write_run(tmp_path / "b", [0], [4], [[4]])
    a, b = (load_run_result(tmp_path / n, "test", group) for n in "ab")
    with pytest.raises(RunError, match="disagree"):
        compare(a, b)


def test_missing_predictions_is_a_clear_error(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    with pytest.raises(RunError, match="evaluate the run first"):
        load_run_result(tmp_path / "run", "test", np.arange(3))
