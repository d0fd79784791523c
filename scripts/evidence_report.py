"""The evidence report of the Office CPU studies: seed 0 (office-cpu), its replication (seed 1
on disjoint test rows, office-cpu-seed1) and the data-matched teacher control
(office-cpu-control), read from their committed per-row predictions.

    python scripts/evidence_report.py [--data ../shared/data/amazon2018/Office_Products] [--out DIR]

It writes DIR/report.md and DIR/results.json (default docs/results/evidence): every finished
cell with title-level, novel-row and item-level figures; per-seed paired tests of each host
with and without TCA4Rec; the same pooled over both seeds (the rows are disjoint samples, so
they are more rows of one test); the control against the host alone and against the
full-data teacher; all on all rows and on novel rows, with exact, bootstrap and normal p
values and a Bonferroni line on the largest. A cell that has not finished is listed as such;
run the script again when it has.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tca4rec.data import load_dataset
from tca4rec.evaluate.report import (ROW_SETS, RunResult, compare, compare_pooled, load_run_result,
                                     paired_tests_section, row_profile)
from tca4rec.io import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
STUDIES = {  # study folder -> the seed its cells use
    "office-cpu": 0, "office-cpu-seed1": 1, "office-cpu-control": 0}
CELLS = {  # label -> (study, cell folder under Office_Products/)
    "SASRec s0": ("office-cpu", "cf/sasrec-s0"),
    "tallrec s0": ("office-cpu", "llm/tallrec-nocf-a0-s0"),
    "tallrec + TCA4Rec s0": ("office-cpu", "llm/tallrec-sasrec-a0.1-s0"),
    "msl s0": ("office-cpu", "llm/msl-nocf-a0-s0"),
    "msl + TCA4Rec s0": ("office-cpu", "llm/msl-sasrec-a0.1-s0"),
    "SASRec s1": ("office-cpu-seed1", "cf/sasrec-s1"),
    "tallrec s1": ("office-cpu-seed1", "llm/tallrec-nocf-a0-s1"),
    "tallrec + TCA4Rec s1": ("office-cpu-seed1", "llm/tallrec-sasrec-a0.1-s1"),
    "msl s1": ("office-cpu-seed1", "llm/msl-nocf-a0-s1"),
    "msl + TCA4Rec s1": ("office-cpu-seed1", "llm/msl-sasrec-a0.1-s1"),
    "SASRec on 2,000 rows s0": ("office-cpu-control", "cf/sasrec-s0"),
    "tallrec + TCA4Rec, teacher on 2,000 rows s0": ("office-cpu-control", "llm/tallrec-sasrec-a0.1-s0"),
}
METRICS = ("NDCG@10", "HR@10")


def load_cells(data: Path) -> tuple[dict[str, RunResult], list[str]]:
    ds = load_dataset(data)
    histories = ds.split("test").histories
    found, missing = {}, []
    for label, (study, cell) in CELLS.items():
        run = REPO / "docs" / "results" / study / "run" / "Office_Products" / cell
        if (run / "predictions_test.jsonl").is_file():
            found[label] = load_run_result(run, "test", ds.title_group, label=label, histories=histories)
        else:
            missing.append(label)
    return found, missing


def tests_of(cells: dict[str, RunResult]) -> list[dict]:
    tests = []
    for host in ("tallrec", "msl"):
        pairs = []
        for seed in (0, 1):
            a, b = cells.get(f"{host} s{seed}"), cells.get(f"{host} + TCA4Rec s{seed}")
            if a is not None and b is not None:
                pairs.append((a, b))
                tests += [{"kind": f"seed {seed}", **compare(a, b, m, rows)} for rows in ROW_SETS for m in METRICS]
        if len(pairs) == 2:
            tests += [{"kind": "seeds 0 and 1 pooled", **compare_pooled(pairs, m, rows)}
                      for rows in ROW_SETS for m in METRICS]
    control = cells.get("tallrec + TCA4Rec, teacher on 2,000 rows s0")
    for base in ("tallrec s0", "tallrec + TCA4Rec s0"):
        if control is not None and base in cells:
            tests += [{"kind": "control", **compare(cells[base], control, m, rows)} for rows in ROW_SETS for m in METRICS]
    return tests


def write(cells: dict[str, RunResult], missing: list[str], out: Path) -> Path:
    lines = ["# Evidence: the Office CPU studies, their replication and the data-matched control", "",
             "Written by `python scripts/evidence_report.py` from the committed predictions of "
             "docs/results/office-cpu, office-cpu-seed1 and office-cpu-control. Hits count an item with the "
             "target's title (the paper's protocol); novel rows: the target's title is not in the history; "
             "item-level: the exact item only.", ""]
    samples = {}
    for label, r in cells.items():
        samples.setdefault(CELLS[label][0], set(r.rows.tolist()))
    if "office-cpu" in samples and "office-cpu-seed1" in samples:
        shared = len(samples["office-cpu"] & samples["office-cpu-seed1"])
        lines += [f"Test rows: seed 0 {len(samples['office-cpu'])}, seed 1 {len(samples['office-cpu-seed1'])}, "
                  f"shared {shared}.", ""]
    lines += ["| method | test rows | NDCG@10 [95% CI] | HR@10 [95% CI] | HR@1 | repeat rows | NDCG@10, novel rows "
              "[95% CI] | NDCG@10, item-level |", "|" + "---|" * 8]
    for label, r in cells.items():
        p = row_profile(r)
        lo, hi = r.ci95["NDCG@10"]
        hlo, hhi = r.ci95["HR@10"]
        nlo, nhi = p["novel_ci95"]["NDCG@10"]
        lines.append(f"| {label} | {len(r.ranks)} | {r.metrics['NDCG@10']:.4f} [{lo:.4f}, {hi:.4f}] | "
                     f"{r.metrics['HR@10']:.4f} [{hlo:.3f}, {hhi:.3f}] | {r.metrics['HR@1']:.4f} | {p['repeat_rows']} | "
                     f"{p['novel']['NDCG@10']:.4f} [{nlo:.4f}, {nhi:.4f}] | {p['item_level']['NDCG@10']:.4f} |")
    if missing:
        lines += ["", f"Not finished yet (no predictions committed): {', '.join(missing)}."]
    tests = tests_of(cells)
    lines += ["", *paired_tests_section(tests)]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "results.json", {
        "cells": {label: {"study": CELLS[label][0], "cell": CELLS[label][1], "rows": int(len(r.ranks)),
                          "metrics": r.metrics, "ci95": {k: list(v) for k, v in r.ci95.items()},
                          "profile": row_profile(r)} for label, r in cells.items()},
        "missing": missing, "tests": tests})
    return out / "report.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "amazon2018" / "Office_Products"))
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "evidence"))
    args = parser.parse_args(argv)
    cells, missing = load_cells(Path(args.data))
    print(f"report: {write(cells, missing, Path(args.out))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
