"""``tca4rec report RUN... --data DIR``: tables, significance and plots for any evaluated runs.

The first run is the reference: every other run is compared with it by a paired bootstrap
over their common rows, and over the novel ones (the target's title not in the history). An
LLM run whose folder holds a learned fusion's results (``_fusion`` files) adds a row for it.
Each run's metrics are over its own rows: the console and ``report.md`` state every run's
row count and, where the runs were evaluated on different rows, how many they share.
"""

from __future__ import annotations

from functools import reduce
from pathlib import Path

import numpy as np

from tca4rec.data import RecDataset, load_dataset
from tca4rec.evaluate.plots import plot_loss_curves, plot_metrics
from tca4rec.evaluate.report import (
    ROW_SETS,
    RunResult,
    bonferroni_lines,
    check_same_depth,
    compare,
    describe_comparison,
    load_run_result,
    metrics_table,
    print_table,
    profile_table,
    results_json,
    row_profile,
)
from tca4rec.fuse.config import FUSION_SUFFIX
from tca4rec.io import atomic_write_json, atomic_write_text, check_output, own_folder

REPORT_FILES = ("report.md", "results.json", "*.png")  # what a report folder holds


def write_runs_report(runs: list[str], data: str, split: str = "test", out: str = "report") -> Path:
    out_dir = check_output(out, "--out", own_folder(REPORT_FILES))
    ds = load_dataset(data)
    histories = ds.split(split).histories
    results = [result for run in runs for result in _with_fusion(run, split, ds, histories)]
    check_same_depth(results)
    tests = [compare(results[0], r, m, rows) for r in results[1:] for rows in ROW_SETS for m in ("NDCG@10", "HR@10")]
    rows = rows_line(results)
    lines = [f"# Report ({split}, dataset {ds.name})", "", metrics_table(results), "", rows, "",
             "Repeat rows (the target's title is already in the history), novel rows and item-level hits "
             "(the exact item; the table above counts identical titles):", "", profile_table(results), ""]
    for t in tests:
        lines.append(f"- {t['b']} vs {t['a']}: {describe_comparison(t)}")
    lines += ["", *bonferroni_lines(tests)]
    plots = [plot_metrics(results, out_dir / "metrics.png")]
    if any(r.loss_curve for r in results):
        plots.append(plot_loss_curves(results, out_dir / "training_loss.png"))
    lines += [""] + [f"![{p.stem}]({p.name})" for p in plots]
    atomic_write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    atomic_write_json(out_dir / "results.json", results_json(results, {
        "significance": tests, "profiles": {r.label: row_profile(r) for r in results}}))
    print_table(results, title=f"{ds.name} ({split})")
    print(rows)
    return out_dir


def _with_fusion(run: str, split: str, ds: RecDataset, histories: np.ndarray) -> list[RunResult]:
    """A run's result and, when its folder holds one, its learned fusion's (the ``_fusion`` files)."""
    plain = load_run_result(run, split, ds.title_group, histories=histories, dataset_fingerprint=ds.fingerprint())
    if not (Path(run) / f"predictions_{split}{FUSION_SUFFIX}.jsonl").is_file():
        return [plain]
    return [plain, load_run_result(run, split, ds.title_group, label=f"{plain.label} + learned fusion",
                                   suffix=FUSION_SUFFIX, histories=histories)]


def rows_line(results: list[RunResult]) -> str:
    """Each run's row count and, where they differ, the rows all runs share (what the paired tests use)."""
    shared = reduce(np.intersect1d, [r.rows for r in results])
    line = "Rows: " + ", ".join(f"{r.label} {len(r.rows)}" for r in results) + "."
    if any(len(r.rows) != len(shared) for r in results):
        line += (f" The runs share only {len(shared)} rows: each run's metrics above are over its own rows, "
                 "the paired tests over the rows each pair shares.")
    return line
