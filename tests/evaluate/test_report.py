"""Reports from run folders: per-row ranks, paired comparison, collaborative consistency."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tca4rec.errors import RunError
from tca4rec.evaluate.metrics import mcnemar_exact_p, paired_bootstrap, sign_flip_p
from tca4rec.evaluate.report import (
    bonferroni_lines,
    check_same_depth,
    collaborative_consistency,
    compare,
    compare_consistency,
    compare_pooled,
    describe_comparison,
    load_run_result,
    metrics_table,
    profile_table,
    restrict_rows,
    row_profile,
)


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


def test_consistency_comparison_against_row_by_row_sets(tmp_path):
    """b - a in consistency@10 with a CF model, over the rows all three ranked, the slow way."""
    rng = np.random.default_rng(3)
    group = np.arange(41)
    targets = rng.integers(1, 41, 90)
    lists = {}
    for name, rows in (("cf", range(0, 90)), ("a", range(0, 80)), ("b", range(10, 90))):
        # b draws from the CF model's few items, a from all: b shares more with it
        pool = np.arange(1, 41) if name == "a" else np.arange(1, 16)
        lists[name] = {r: [int(x) for x in rng.choice(pool, 10, replace=False)] for r in rows}
        lists[name][rows[0]][9] = 0  # an empty slot never counts as shared
        write_run(tmp_path / name, list(rows), [int(targets[r]) for r in rows], list(lists[name].values()))
    cf, a, b = (load_run_result(tmp_path / n, "test", group) for n in ("cf", "a", "b"))
    common = range(10, 80)
    def share(name, r):
        return len((set(lists[name][r]) - {0}) & set(lists["cf"][r])) / 10

    diff = np.array([share("b", r) - share("a", r) for r in common])
    t = compare_consistency(a, b, cf)
    assert t["rows"] == 70 and t["metric"] == "consistency@10" and t["discordant"] == int((diff != 0).sum())
    assert t["diff"] == pytest.approx(diff.mean()) and t["p_exact"] == sign_flip_p(diff)
    assert t["diff"] > 0 and t["low"] <= t["diff"] <= t["high"] and t["significant"]
    assert collaborative_consistency(a, cf) == pytest.approx(np.mean([share("a", r) for r in range(80)]))
    assert "Δconsistency@10" in describe_comparison(t) and "sign-flip" in describe_comparison(t)


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


@pytest.mark.parametrize("rows, targets, items, message", [
    ([0, -5], [3, 4], [[3], [4]], r"line 2: row -5 is not a row number"),
    ([0, 0], [3, 4], [[3], [4]], r": row 0 appears 2 times"),
    ([0, 1], [3, 0], [[3], [4]], r"line 2: target 0 is not an item of the catalog \(1..9\)"),
    ([0, 1], [3, 4], [[3], "4"], r"line 2: items must be a list of item ids of the catalog"),
    ([0, 1], [3, 4], [[3], [4, 99]], r"line 2: items must be a list of item ids of the catalog"),
    ([0, 1], [3, 4], [[3], [True]], r"line 2: items must be a list of item ids of the catalog"),
    ([0, "1"], [3, 4], [[3], [4]], r"line 2: row '1' is not a row number"),
])
def test_a_damaged_prediction_line_is_named_not_counted(tmp_path, rows, targets, items, message):
    """A negative or repeated row would be paired with another row (numpy wraps and intersect1d
    assumes unique rows); a bad item would be a miss or a stack trace. Each is refused, named."""
    write_run(tmp_path / "run", rows, targets, items)
    with pytest.raises(RunError, match=message):
        load_run_result(tmp_path / "run", "test", np.arange(10))


def test_novel_rows_and_item_level_hits_against_a_row_by_row_reference(tmp_path):
    rng = np.random.default_rng(0)
    items, rows = 30, 200
    group = np.arange(items + 1)
    group[rng.choice(np.arange(2, items + 1), 8, replace=False)] = 1  # 8 items share item 1's title
    histories = rng.integers(0, items + 1, size=(rows, 4))
    targets = rng.integers(1, items + 1, rows)
    ranked = [list(rng.choice(np.arange(1, items + 1), 10, replace=False)) for _ in range(rows)]
    for r in range(0, rows, 3):  # make repeats and exact hits common enough to matter
        histories[r, -1] = targets[r]
        ranked[r][0] = int(targets[r])
    ranked_b = [row[::-1] for row in ranked]
    write_run(tmp_path / "a", list(range(rows)), targets.tolist(), [list(map(int, x)) for x in ranked])
    write_run(tmp_path / "b", list(range(rows)), targets.tolist(), [list(map(int, x)) for x in ranked_b])
    a, b = (load_run_result(tmp_path / n, "test", group, histories=histories) for n in "ab")
    for r in range(rows):  # the slow way: title sets and the first exact item
        titles = {group[i] for i in histories[r] if i > 0}
        assert a.repeat[r] == (group[targets[r]] in titles)
        exact = [k + 1 for k, i in enumerate(ranked[r]) if i == targets[r]]
        assert a.item_ranks[r] == (exact[0] if exact else 0)
        assert a.item_ranks[r] == 0 or a.ranks[r] <= a.item_ranks[r]  # a title hit never comes later
    novel = compare(a, b, "NDCG@10", rows="novel")
    assert novel["rows"] == int((~a.repeat).sum()) and novel["row_set"] == "novel"
    def ndcg(ranks):
        return np.where(ranks > 0, 1 / np.log2(np.maximum(ranks, 1) + 1), 0.0)

    gain = ndcg(b.ranks) - ndcg(a.ranks)
    assert novel["diff"] == pytest.approx(gain[~a.repeat].mean())
    profile = row_profile(a)
    assert profile["repeat_rows"] + profile["novel_rows"] == rows
    assert profile["hr1_hits_on_repeat_rows"] == int(((a.ranks == 1) & a.repeat).sum())
    assert "| a |" in profile_table([a, b])
    with pytest.raises(RunError, match="histories"):
        compare(load_run_result(tmp_path / "a", "test", group), b, rows="novel")


def test_bonferroni_uses_the_largest_p_of_each_test():
    tests = [{"a": "x", "b": "y", "metric": "NDCG@10", "row_set": "all", "p": 0.03, "p_exact": 0.001},
             {"a": "x", "b": "y", "metric": "HR@10", "row_set": "all", "p": 0.004, "p_exact": 0.004}]
    (line,) = bonferroni_lines(tests)
    assert "1 of 2 remain significant" in line and "HR@10" in line and "NDCG@10" not in line.split(":", 1)[1]


def test_runs_decoded_with_different_beam_widths_are_not_compared(tmp_path):
    group = np.arange(10)
    for name, beams in (("ten", 10), ("three", 3), ("twelve", 12)):
        write_run(tmp_path / name, [0, 1], [3, 4], [[3, 4, 5], [1, 2, 4]])
        (tmp_path / name / "metrics_test.json").write_text(json.dumps({"rows": 2, "beams": beams}))
    write_run(tmp_path / "cf", [0, 1], [3, 4], [[3], [4]])  # a CF run: no beams, full ranking
    ten, three, twelve, cf = (load_run_result(tmp_path / n, "test", group) for n in ("ten", "three", "twelve", "cf"))
    assert (ten.beams, three.beams, cf.beams) == (10, 3, None)
    check_same_depth([ten, twelve, cf])  # all complete up to @10
    with pytest.raises(RunError, match="different beam widths.*three: 3"):
        check_same_depth([ten, three])


def test_pooled_comparison_is_one_test_over_the_rows_of_every_pair(tmp_path):
    rng = np.random.default_rng(1)
    group = np.arange(40)
    runs = {}
    for name, rows in (("a0", range(0, 50)), ("b0", range(0, 50)), ("a1", range(50, 80)), ("b1", range(50, 80))):
        targets = [int(1 + r % 39) for r in rows]
        items = [[int(x) for x in rng.choice(np.arange(1, 40), 10, replace=False)] for _ in rows]
        write_run(tmp_path / name, list(rows), targets, items)
        runs[name] = load_run_result(tmp_path / name, "test", group)
    single = compare(runs["a0"], runs["b0"], "NDCG@10")
    pooled_one = compare_pooled([(runs["a0"], runs["b0"])], "NDCG@10")
    assert pooled_one["diff"] == pytest.approx(single["diff"]) and pooled_one["p_exact"] == single["p_exact"]
    pooled = compare_pooled([(runs["a0"], runs["b0"]), (runs["a1"], runs["b1"])], "HR@10")
    hits = {n: (r.ranks > 0) & (r.ranks <= 10) for n, r in runs.items()}
    expected = (hits["b0"].sum() - hits["a0"].sum() + hits["b1"].sum() - hits["a1"].sum()) / 80
    assert pooled["rows"] == 80 and pooled["pairs"] == 2 and pooled["diff"] == pytest.approx(expected)
    assert pooled["p_exact"] == mcnemar_exact_p(np.concatenate([hits["a0"], hits["a1"]]),
                                                np.concatenate([hits["b0"], hits["b1"]]))


def test_a_p_value_at_its_resolution_floor_is_reported_as_such_and_not_used_for_bonferroni():
    """2,000 resamples resolve p only down to 2/2001: over 48 tests (threshold 0.00104) the bootstrap
    p cannot count, and the test is judged on its exact and normal p values instead."""
    from tca4rec.evaluate.report import describe_comparison

    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=1000)
    b = np.where(rng.random(1000) < 0.3, 1, a)  # b often ranks first: a clear gain
    t = {"a": "x", "b": "y", "row_set": "all", "metric": "NDCG@10", "rows": 1000, **paired_bootstrap(a, b, "NDCG@10")}
    assert t["p_bootstrap"] == t["p_bootstrap_floor"] == 2 / 2001 and t["n_boot"] == 2000
    assert "≤ 0.001 (2,000 resamples) bootstrap" in describe_comparison(t)
    assert t["p"] == t["p_bootstrap"]  # the largest of the three sits at the floor
    (line,) = bonferroni_lines([t] * 48)
    assert "48 of 48 remain significant" in line and "bootstrap p values that cannot resolve it are set aside" in line
    assert "2,000 resamples" in line
    worse = {**t, "p_normal": 0.002}  # judged on the p values that resolve it: no longer significant
    (line,) = bonferroni_lines([worse] * 48)
    assert "0 of 48 remain significant" in line
    (line,) = bonferroni_lines([t] * 64)  # 0.00078, under the floor: "at most 0.001" cannot veto either
    assert "64 of 64 remain significant" in line and "bootstrap p values that cannot resolve it are set aside" in line
    coarse = {**t, "p_bootstrap": 0.002, "p": 0.002}  # above its floor and the threshold: an estimate, and it says no
    (line,) = bonferroni_lines([coarse] * 64)
    assert "0 of 64 remain significant" in line
    (line,) = bonferroni_lines([t] * 4)  # 0.0125: resolved by 2,000 resamples, nothing set aside
    assert "set aside" not in line and "4 of 4" in line
    assert "p ≤ 0.001)" in line  # the bootstrap p it rests on is its floor: "at most", not a value
    null = {**t, "p_bootstrap": 0.8, "p_exact": 0.7, "p_normal": 0.75, "p": 0.8}  # coarse but far above: it stays
    (line,) = bonferroni_lines([null] * 48)
    assert "set aside" not in line and "0 of 48" in line


def test_runs_report_states_row_counts_and_partial_overlap(synth_dir, tmp_path, capsys):
    """Runs on different test rows: the console (not only report.md) says how many rows each has and shares."""
    from tca4rec.study.runs_report import write_runs_report

    write_run(tmp_path / "a", [0, 1, 2, 3], [3, 4, 5, 6], [[3], [4], [1], [2]])
    write_run(tmp_path / "b", [2, 3, 4], [5, 6, 7], [[5], [1], [7]])
    write_runs_report([str(tmp_path / "a"), str(tmp_path / "b")], str(synth_dir), out=str(tmp_path / "report"))
    out = capsys.readouterr().out
    line = "Rows: a 4, b 3. The runs share only 2 rows"
    assert line in out and line in (tmp_path / "report" / "report.md").read_text()
    write_runs_report([str(tmp_path / "a"), str(tmp_path / "a")], str(synth_dir), out=str(tmp_path / "report"))
    assert "Rows: a 4, a 4.\n" in capsys.readouterr().out  # the same rows: nothing more to say


def test_runs_report_refuses_a_run_of_another_dataset(synth_dir, tmp_path):
    """--data of another catalog used to give a report of the wrong rows' breakdowns, silently."""
    from tca4rec.data import load_dataset
    from tca4rec.study.runs_report import write_runs_report

    fingerprint = load_dataset(synth_dir).fingerprint()
    for name, record in (("cf", {"model": "x", "dataset": {"fingerprint": "0123456789abcdef"}}),
                         ("llm", {"format": "tca4rec.llm_run/1", "dataset_fingerprint": "0123456789abcdef"}),
                         ("own", {"model": "x", "dataset": {"fingerprint": fingerprint}})):
        write_run(tmp_path / name, [0, 1], [3, 4], [[3], [4]])
        (tmp_path / name / "config.json").write_text(json.dumps(record))
    for name in ("cf", "llm"):
        with pytest.raises(RunError, match=f"{name} was trained on another dataset .*fingerprint 0123456789abcdef"):
            write_runs_report([str(tmp_path / "own"), str(tmp_path / name)], str(synth_dir),
                              out=str(tmp_path / "report"))
    write_runs_report([str(tmp_path / "own")], str(synth_dir), out=str(tmp_path / "report"))
    (tmp_path / "own" / "config.json").write_text("[1, 2]")
    with pytest.raises(RunError, match="is not a run record"):
        write_runs_report([str(tmp_path / "own")], str(synth_dir), out=str(tmp_path / "report"))


def test_a_run_restricted_to_some_rows_is_the_run_of_those_rows(tmp_path):
    """restrict_rows against a run written with only those rows: same ranks, metrics, CIs, tests."""
    rng = np.random.default_rng(0)
    rows, targets = rng.permutation(40), rng.integers(1, 30, 40)
    items = rng.integers(1, 30, (40, 10)).tolist()
    keep = np.sort(rng.choice(40, 15, replace=False))
    write_run(tmp_path / "all", rows.tolist(), targets.tolist(), items)
    picked = np.isin(rows, keep)
    write_run(tmp_path / "some", rows[picked].tolist(), targets[picked].tolist(), [i for i, p in zip(items, picked) if p])
    group, histories = np.arange(31), rng.integers(0, 31, (40, 5))
    whole = load_run_result(tmp_path / "all", "test", group, histories=histories)
    restricted = restrict_rows(whole, keep)
    alone = load_run_result(tmp_path / "some", "test", group, histories=histories)
    assert restricted.rows.tolist() == alone.rows.tolist() == keep.tolist()
    for field in ("ranks", "item_ranks", "repeat", "targets", "topk"):
        np.testing.assert_array_equal(getattr(restricted, field), getattr(alone, field))
    assert restricted.metrics == alone.metrics and restricted.ci95 == alone.ci95
    shifted = dataclasses.replace(whole, label="b", ranks=np.roll(whole.ranks, 1))
    test = compare(restricted, restrict_rows(shifted, keep))
    assert test["rows"] == 15 and " over 15 fresh rows " in describe_comparison({**test, "row_set": "fresh"})
    with pytest.raises(RunError, match="none of its rows"):
        restrict_rows(whole, np.array([100]))
