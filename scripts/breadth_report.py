"""The breadth report (evidence issue, round 4): does the gain hold for other CF teachers, another
host, and does alpha act as a knob? Read from the committed predictions of docs/results/breadth.

    python scripts/breadth_report.py [--data DIR] [--fluency] [--texts DIR]

Writes docs/results/breadth/report.md, results.json and alpha.png. One table per question:

- A. Teachers: tallrec + TCA4Rec (alpha 0.1) taught by SASRec, BERT4Rec, GRU4Rec and MostPop
  (the control: no personal signal), each against tallrec alone, beside the teacher's own
  NDCG@10 (does the gain follow the teacher?).
- B. Host: llara + TCA4Rec against llara alone (both read SASRec's embeddings), and each
  llara cell against the tallrec cell with the same labels.
- C. Alpha: tallrec + TCA4Rec (SASRec) at alpha 0, 0.1, 0.3, 0.6, 1.0: NDCG@10 on all and novel
  rows, consistency@10 with the teacher's own top-10, and fluency (``tca4rec.llm.fluency``:
  the target title's NLL per token on the first 500 valid rows, and the NLL per token of 500
  Toys_and_Games titles read as plain text, a catalog no cell trained on). Every alpha > 0 is
  tested against alpha 0, in NDCG@10 and in consistency with the teacher, and in consistency
  against the alpha below it (the knob: does the student follow its teacher more as alpha grows?).

Paired tests (sign-flip or McNemar, bootstrap, normal; MDE80) on all rows and on novel rows,
and one Bonferroni line over this report's own tests. ``--fluency`` first computes the fluency
of every finished alpha cell that has none yet (``fluency.json`` in the cell; minutes per cell
on a CPU). A cell that has not finished is listed as such: run the script again when it has.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from tca4rec.data import load_dataset
from tca4rec.evaluate.metrics import paired_difference, ratio_ci
from tca4rec.evaluate.plots import plot_alpha_panels
from tca4rec.evaluate.report import (ROW_SETS, RunResult, collaborative_consistency, compare, compare_consistency,
                                     load_run_result, paired_tests_section, row_profile)
from tca4rec.io import atomic_write_json, atomic_write_text, load_tensors
from tca4rec.llm.fluency import fluency

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "docs" / "results" / "breadth" / "run" / "Office_Products"
TEACHERS = {"SASRec": "sasrec", "BERT4Rec": "bert4rec", "GRU4Rec": "gru4rec", "MostPop": "mostpop"}
ALPHAS = (0.0, 0.1, 0.3, 0.6, 1.0)
METRICS = ("NDCG@10", "HR@10")
FLUENCY_ROWS, FLUENCY_TEXTS = 500, 500


def cell_folders() -> dict[str, Path]:
    """Display label -> run folder of every cell the report reads."""
    cells = {name: RUN / "cf" / f"{model}-s1" for name, model in TEACHERS.items()}
    cells["tallrec"] = RUN / "llm" / "tallrec-nocf-a0-s1"
    for name, model in TEACHERS.items():
        cells[f"tallrec + TCA4Rec({name})"] = RUN / "llm" / f"tallrec-{model}-a0.1-s1"
    cells["llara(SASRec)"] = RUN / "llm" / "llara-sasrec-a0-s1"
    cells["llara + TCA4Rec(SASRec)"] = RUN / "llm" / "llara-sasrec-a0.1-s1"
    for alpha in ALPHAS[2:]:
        cells[f"tallrec + TCA4Rec(SASRec, α={alpha:g})"] = RUN / "llm" / f"tallrec-sasrec-a{alpha:g}-s1"
    return cells


def alpha_cells() -> dict[float, str]:
    """alpha -> label of the tallrec cell taught by SASRec at that alpha."""
    return {0.0: "tallrec", 0.1: "tallrec + TCA4Rec(SASRec)",
            **{a: f"tallrec + TCA4Rec(SASRec, α={a:g})" for a in ALPHAS[2:]}}


def load_cells(data: Path) -> tuple[dict[str, RunResult], list[str]]:
    ds = load_dataset(data)
    histories = ds.split("test").histories
    found, missing = {}, []
    for label, run in cell_folders().items():
        if (run / "predictions_test.jsonl").is_file():
            found[label] = load_run_result(run, "test", ds.title_group, label=label, histories=histories)
        else:
            missing.append(label)
    return found, missing


def read_fluency(run: Path) -> dict | None:
    """A cell's ``fluency.json`` if it has one with per-row values (older records had means only)."""
    path = run / "fluency.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    return record if "target_row_nll" in record else None


def measure_fluency(cells: dict[str, RunResult], texts_dir: Path) -> None:
    """Write ``fluency.json`` into every finished alpha cell that lacks one."""
    texts = load_dataset(texts_dir).titles[1:FLUENCY_TEXTS + 1]
    for label in alpha_cells().values():
        run = cell_folders()[label]
        if label in cells and read_fluency(run) is None:
            print(f"fluency of {label} ...", flush=True)
            record = fluency(run, rows=FLUENCY_ROWS, texts=texts)
            atomic_write_json(run / "fluency.json", {**record, "texts_from": texts_dir.name})


def tests_of(cells: dict[str, RunResult]) -> list[dict]:
    def pair(kind: str, a: str, b: str) -> list[dict]:
        if a not in cells or b not in cells:
            return []
        return [{"kind": kind, **compare(cells[a], cells[b], m, rows)} for rows in ROW_SETS for m in METRICS]

    tests = []
    for name in TEACHERS:
        tests += pair("A. teachers", "tallrec", f"tallrec + TCA4Rec({name})")
    # the control: does SASRec teach more than a teacher with popularity only?
    tests += pair("A. teachers", "tallrec + TCA4Rec(MostPop)", "tallrec + TCA4Rec(SASRec)")
    tests += pair("B. host", "llara(SASRec)", "llara + TCA4Rec(SASRec)")
    tests += pair("B. host", "tallrec", "llara(SASRec)")
    tests += pair("B. host", "tallrec + TCA4Rec(SASRec)", "llara + TCA4Rec(SASRec)")
    for alpha, label in alpha_cells().items():
        if alpha > 0.1:  # alpha 0.1 against 0 is the SASRec row of A
            tests += pair("C. alpha", "tallrec", label)
    # the knob itself: does the student follow its teacher more as alpha grows? Each alpha against
    # alpha 0, and each step up against the alpha below it
    labels = list(alpha_cells().values())
    steps = [(labels[0], b) for b in labels[1:]] + list(zip(labels[1:], labels[2:]))
    for a, b in steps:
        if {a, b, "SASRec"} <= cells.keys():
            tests.append({"kind": "C. alpha", **compare_consistency(cells[a], cells[b], cells["SASRec"])})
    # what alpha costs the language side, on the same valid rows and held-out titles
    for a, b in steps:
        fa, fb = (read_fluency(cell_folders()[label]) for label in (a, b))
        if fa is not None and fb is not None:
            tests += fluency_tests(a, fa, b, fb)
    return tests


# (test metric, report key, per-row NLL sums, per-row token counts, rows of the paired test)
FLUENCY_MEASURES = (("target NLL", "target_nll", "target_row_nll", "target_row_tokens", "valid"),
                    ("text NLL", "text_nll", "text_row_nll", "text_row_tokens", "held-out title"))
BASE_TEXT_NLL = ("base_text_nll", "base_text_row_nll", "text_row_tokens")  # the model without LoRA: no test


def fluency_tests(a: str, fa: dict, b: str, fb: dict) -> list[dict]:
    """Paired tests of b - a in target NLL (per token, the same valid rows) and in text NLL (the
    same held-out titles); a row's NLL sum and its token count are resampled together."""
    tests = []
    for metric, _, sums, tokens, row_set in FLUENCY_MEASURES:
        if fa[tokens] != fb[tokens]:
            raise SystemExit(f"{a} and {b}: fluency measured on other rows or texts; measure again")
        tests.append({"kind": "C. alpha", "a": a, "b": b, "metric": metric, "row_set": row_set,
                      "rows": len(fa[tokens]), **paired_difference(np.asarray(fa[sums]), np.asarray(fb[sums]),
                                                                   weights=np.asarray(fa[tokens]))})
    return tests


def _delta(tests: list[dict], a: str, b: str, rows: str, metric: str = "NDCG@10", digits: int = 4) -> str:
    t = next((t for t in tests if t["a"] == a and t["b"] == b and t["metric"] == metric and t["row_set"] == rows),
             None)
    if t is None:
        return "–"
    star = " *" if t["significant"] else ""
    return f"{t['diff']:+.{digits}f} [{t['low']:+.{digits}f}, {t['high']:+.{digits}f}]{star}"


def _ndcg(r: RunResult | None) -> str:
    if r is None:
        return "not finished"
    lo, hi = r.ci95["NDCG@10"]
    return f"{r.metrics['NDCG@10']:.4f} [{lo:.4f}, {hi:.4f}]"


def _novel(r: RunResult | None) -> str:
    return "–" if r is None else f"{row_profile(r)['novel']['NDCG@10']:.4f}"


def adapter_step(lower: Path, upper: Path) -> float:
    """How far the LoRA weights moved from one cell to another: ||upper - lower|| / ||lower||, over
    all adapter entries as one vector (same base model, seed and data order: only alpha differs)."""
    a, b = (load_tensors(run / "adapter" / "adapter_model.safetensors") for run in (lower, upper))
    diff = sum(float((b[k].double() - a[k].double()).square().sum()) for k in a)
    return (diff / sum(float(a[k].double().square().sum()) for k in a)) ** 0.5


def alpha_rows(cells: dict[str, RunResult]) -> list[dict]:
    """Per alpha: accuracy, consistency with the teacher, how far its LoRA weights moved from the
    alpha below, and fluency, where finished."""
    rows = []
    teacher = cells.get("SASRec")
    below = None
    for alpha, label in alpha_cells().items():
        r = cells.get(label)
        flu = read_fluency(cell_folders()[label]) or {}
        ci = {f"{key}_ci95": list(ratio_ci(flu[sums], flu[tokens])[1:]) if flu else None
              for key, sums, tokens in [m[1:4] for m in FLUENCY_MEASURES] + [BASE_TEXT_NLL]}
        rows.append({"alpha": alpha, "label": label, "finished": r is not None,
                     "NDCG@10": r.metrics["NDCG@10"] if r else None,
                     "NDCG@10 novel": row_profile(r)["novel"]["NDCG@10"] if r else None,
                     "consistency@10": collaborative_consistency(r, teacher) if r and teacher else None,
                     "adapter_step": adapter_step(cell_folders()[below], cell_folders()[label])
                     if r and below in cells else None,
                     "target_nll": flu.get("target_nll"), "text_nll": flu.get("text_nll"),
                     "base_text_nll": flu.get("base_text_nll"), **ci})
        below = label
    return rows


def write(cells: dict[str, RunResult], missing: list[str], out: Path) -> Path:
    tests = tests_of(cells)
    lines = ["# Breadth: other CF teachers, another host, alpha as a knob", "",
             "Written by `python scripts/breadth_report.py` from the committed predictions of "
             "docs/results/breadth (study file docs/results/breadth.yaml): Office_Products, seed 1, the first 2,000 "
             "train rows for one epoch, the seed-1 sample of 1,000 test rows, 10 beams; teachers trained by the "
             "default commands on all train rows. Hits count an item with the target's title; novel rows: the "
             "target's title is not in the history. Δ: NDCG@10 against the row's reference, 95% bootstrap CI, "
             "* significant on its own (CI excludes 0 and all three p < 0.05).", ""]
    lines += ["## A. Teachers: is there a gain with each, and does it follow the teacher?", "",
              "| teacher | teacher NDCG@10 [95% CI] | tallrec + TCA4Rec NDCG@10 [95% CI] | Δ vs tallrec alone, all rows "
              "| Δ, novel rows |", "|---|---|---|---|---|",
              f"| (none: tallrec alone) | – | {_ndcg(cells.get('tallrec'))} | – | – |"]
    for name in sorted(TEACHERS, key=lambda n: -(cells[n].metrics["NDCG@10"] if n in cells else 0)):
        student = f"tallrec + TCA4Rec({name})"
        lines.append(f"| {name} | {_ndcg(cells.get(name))} | {_ndcg(cells.get(student))} | "
                     f"{_delta(tests, 'tallrec', student, 'all')} | {_delta(tests, 'tallrec', student, 'novel')} |")
    lines += ["", "## B. Host: llara (LLaRA/CoLLM: SASRec's embeddings in the prompt)", "",
              "| method | NDCG@10 [95% CI] | NDCG@10, novel rows | HR@10 | NDCG@10, item-level |", "|---|---|---|---|---|"]
    for label in ("tallrec", "tallrec + TCA4Rec(SASRec)", "llara(SASRec)", "llara + TCA4Rec(SASRec)"):
        r = cells.get(label)
        lines.append(f"| {label} | {_ndcg(r)} | {_novel(r)} | " + (
            f"{r.metrics['HR@10']:.4f} | {row_profile(r)['item_level']['NDCG@10']:.4f} |" if r else "– | – |"))
    lines += ["", "## C. Alpha: accuracy, agreement with the teacher, fluency", "",
              "Consistency@10: share of the LLM's top-10 items also in SASRec's top-10 for the row. LoRA step: how "
              "far the LoRA weights moved from the previous alpha's cell, ||Δ|| / ||weights|| over all adapter "
              "entries (same seed, initialization and data order).", "",
              "| alpha | NDCG@10 [95% CI] | Δ vs alpha 0 | NDCG@10, novel rows | Δ, novel rows | consistency@10 | "
              "Δ consistency vs alpha 0 | LoRA step |", "|---|---|---|---|---|---|---|---|"]
    alpha = alpha_rows(cells)
    ref = "tallrec"
    for row in alpha:
        r = cells.get(row["label"])
        cons = "–" if row["consistency@10"] is None else f"{row['consistency@10']:.3f}"
        step = "–" if row["adapter_step"] is None else f"{row['adapter_step']:.1%}"
        lines.append(f"| {row['alpha']:g} | {_ndcg(r)} | {_delta(tests, ref, row['label'], 'all')} | {_novel(r)} | "
                     f"{_delta(tests, ref, row['label'], 'novel')} | {cons} | "
                     f"{_delta(tests, ref, row['label'], 'all', 'consistency@10', 3)} | {step} |")
    lines += ["", f"Fluency. Target NLL: nats per token of the target title + EOS after the prompt, the first "
              f"{FLUENCY_ROWS} valid rows (the same for every alpha). Text NLL: nats per token of the first "
              f"{FLUENCY_TEXTS} Toys_and_Games titles read as plain text, a catalog no cell trained on (the model "
              "with its LoRA weights; without them, the base model's, it is the same for every cell). 95% CIs "
              "resample rows (titles) with their tokens; Δ: against alpha 0 and against the alpha below.", "",
              "| alpha | target NLL [95% CI] | Δ vs alpha 0 | Δ vs alpha below | text NLL [95% CI] | Δ vs alpha 0 "
              "| Δ vs alpha below | text NLL without LoRA |", "|---|---|---|---|---|---|---|---|"]
    below = None
    for row in alpha:
        if row["target_nll"] is None:
            lines.append(f"| {row['alpha']:g} | not measured yet | – | – | – | – | – | – |")
        else:
            parts = []
            for metric, key, _, _, rows in FLUENCY_MEASURES:
                lo, hi = row[f"{key}_ci95"]
                up = "–" if below is None else _delta(tests, below, row["label"], rows, metric, 3)
                parts += [f"{row[key]:.3f} [{lo:.3f}, {hi:.3f}]",
                           "–" if row["alpha"] == 0 else _delta(tests, ref, row["label"], rows, metric, 3),
                           "–" if below == ref else up]
            lines.append(f"| {row['alpha']:g} | {' | '.join(parts)} | {row['base_text_nll']:.3f} |")
        below = row["label"]
    finished = [row for row in alpha if row["finished"]]
    if len(finished) >= 2:
        plot_alpha_panels(finished, out / "alpha.png")
        lines += ["", "![alpha](alpha.png)"]
    if missing:
        lines += ["", f"Not finished yet (no predictions committed): {', '.join(missing)}."]
    lines += ["", *paired_tests_section(tests)]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "results.json", {
        "cells": {label: {"run": str(cell_folders()[label].relative_to(REPO)), "rows": int(len(r.ranks)),
                          "metrics": r.metrics, "ci95": {k: list(v) for k, v in r.ci95.items()},
                          "profile": row_profile(r)} for label, r in cells.items()},
        "alpha": alpha, "missing": missing, "tests": tests})
    return out / "report.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = REPO.parent / "shared" / "data" / "amazon2018"
    parser.add_argument("--data", default=str(shared / "Office_Products"))
    parser.add_argument("--texts", default=str(shared / "Toys_and_Games"), help="catalog whose titles test fluency")
    parser.add_argument("--fluency", action="store_true", help="first measure the alpha cells' fluency where missing")
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "breadth"))
    args = parser.parse_args(argv)
    cells, missing = load_cells(Path(args.data))
    if args.fluency:
        measure_fluency(cells, Path(args.texts))
    print(f"report: {write(cells, missing, Path(args.out))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
