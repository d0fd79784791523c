"""The learned-fusion report (fusion issue): is the fused recommender above its SASRec teacher?
Read from the predictions of a study folder laid out like docs/results/fusion-office/run.

    python scripts/fusion_report.py [--run DIR] [--data DIR] [--out DIR]

Per host (tallrec, msl; alpha 0, seed 1): SASRec, the plain decoding, CF-guided decoding at the
beta tuned on valid rows and the learned fusion, on the same test rows. Paired tests of the
learned fusion against SASRec (NDCG@10 and HR@10) and against CF-guided decoding (NDCG@10), on
all rows, novel rows (target title not in the history) and fresh rows: the rows outside the
seed-1 sample of 1,000, which the issue's exploratory check looked at, so no decision about the
fusion has seen them. One Bonferroni line over all of the report's tests; the goal (at least
10% above SASRec on all rows, significant after Bonferroni) is judged per host. Also what
limits it: how often the target is among the candidates (LLM beams, CF top-K titles, both),
and each feature's share of the trees' gain. A method not decoded yet is listed as missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from tca4rec.data import load_dataset
from tca4rec.evaluate.report import (RunResult, compare, load_run_result, paired_tests_section, resolved_p,
                                     restrict_rows)
from tca4rec.fuse.apply import read_beams
from tca4rec.fuse.features import FEATURE_NAMES, Candidates, candidates_in_chunks
from tca4rec.fuse.store import load_fusion, read_fusion_record
from tca4rec.io import atomic_write_json, atomic_write_text
from tca4rec.llm.evaluate import decoding_suffix
from tca4rec.llm.run import load_run_signals

REPO = Path(__file__).resolve().parents[1]
HOSTS = ("tallrec", "msl")
LOOKAHEAD = "max"
EXPLORED = (1000, 1, ((1000, 0), (2500, 0)))  # the seed-1 sample (limit, seed, excluded samples)
GOAL = 0.10  # the issue's: at least 10% above SASRec


def method_files(run: Path, host: str) -> dict[str, tuple[Path, str]]:
    """The host's four methods, in the report's order: label -> (run folder, predictions suffix)."""
    cell = run / "llm" / f"{host}-nocf-a0-s1"
    beta = json.loads((cell / "beta_tuning_max.json").read_text())["best_beta"]  # tuned on valid rows
    return {"SASRec": (run / "cf" / "sasrec-s1", ""), host: (cell, ""),
            f"{host} + CF-guided (β={beta:g})": (cell, decoding_suffix(beta, False, LOOKAHEAD)),
            f"{host} + learned fusion": (cell, "_fusion")}


def load_methods(run: Path, dataset) -> tuple[dict[str, dict[str, RunResult]], list[str]]:
    histories = dataset.split("test").histories
    found, missing = {}, []
    for host in HOSTS:
        found[host] = {}
        for label, (folder, suffix) in method_files(run, host).items():
            if (folder / f"predictions_test{suffix}.jsonl").is_file():
                found[host][label] = load_run_result(folder, "test", dataset.title_group, label=label,
                                                     suffix=suffix, histories=histories)
            else:
                missing.append(label)
    return found, missing


def tests_of(run: Path, host: str, methods: dict[str, RunResult], fresh: np.ndarray) -> list[dict]:
    """The learned fusion against SASRec (NDCG@10, HR@10) and against CF-guided decoding (NDCG@10),
    on all, novel and fresh rows (fresh only where the runs have any)."""
    sasrec, _, guided, fused = method_files(run, host)
    tests = []
    for ref, metrics in ((sasrec, ("NDCG@10", "HR@10")), (guided, ("NDCG@10",))):
        if ref not in methods or fused not in methods:
            continue
        a, b = methods[ref], methods[fused]
        for metric in metrics:
            tests += [{"kind": f"{fused} vs {ref}", **compare(a, b, metric, rows)} for rows in ("all", "novel")]
            if np.isin(a.rows, fresh).any():
                tests.append({"kind": f"{fused} vs {ref}", **compare(restrict_rows(a, fresh), restrict_rows(b, fresh),
                                                                     metric), "row_set": "fresh"})
    return tests


def fusion_facts(run: Path, host: str, data: Path, dataset) -> tuple[dict | None, dict[str, float] | None]:
    """What limits the host's fusion: how often the target's title is among its candidates on the
    test rows, by source (None before the test rows are decoded), and each feature's share of the
    trees' gain (None before the fusion is fit)."""
    cell = run / "llm" / f"{host}-nocf-a0-s1"
    if not (cell / "fusion" / "fusion.json").is_file():
        return None, None
    _, _, signals = load_run_signals(cell, data)  # the dataset given, not the path the run was trained with
    # The stored CF-run path is relative to the repository root (portable_paths): from any folder.
    fusion = load_fusion(cell, signals, REPO / read_fusion_record(cell)["cf_run"])
    gain = fusion.booster.feature_importance("gain")
    shares = {name: float(g / gain.sum()) for name, g in zip(FEATURE_NAMES, gain)}
    if not (cell / "predictions_test.jsonl").is_file():
        return None, shares
    _, rows, items, scores = read_beams(cell, "test", dataset)
    split = dataset.split("test")
    cands = Candidates.concat([c for *_, c in candidates_in_chunks(
        fusion.table, fusion.cf_model, split.users[rows], split.histories[rows], items, scores, fusion.config.k,
        split.targets[rows])])
    hit = cands.label
    in_llm, in_cf = cands.features[:, FEATURE_NAMES.index("in_llm")] > 0, cands.features[:, FEATURE_NAMES.index("in_cf")] > 0

    def share(mask: np.ndarray) -> float:
        return float(np.bincount(cands.row[hit & mask], minlength=cands.num_rows).astype(bool).mean())

    recall = {"rows": int(cands.num_rows), "k": fusion.config.k, "beams": fusion.beams,
              "candidates_per_row": float(cands.sizes.mean()), "any": share(np.ones_like(hit)),
              "llm_beams": share(in_llm), "cf_top_k": share(in_cf), "only_llm": share(in_llm & ~in_cf),
              "only_cf": share(in_cf & ~in_llm)}
    return recall, shares


def _ndcg(r: RunResult) -> str:
    lo, hi = r.ci95["NDCG@10"]
    return f"{r.metrics['NDCG@10']:.4f} [{lo:.4f}, {hi:.4f}]"


def write(run: Path, data: Path, out: Path) -> Path:
    dataset = load_dataset(data)
    found, missing = load_methods(run, dataset)
    split = dataset.split("test")
    explored = split.select(EXPLORED[0], EXPLORED[1], EXPLORED[2]).row_ids
    fresh = np.setdiff1d(split.row_ids, explored)
    tests = [t for host in HOSTS for t in tests_of(run, host, found[host], fresh)]
    bound = 0.05 / max(len(tests), 1)
    lines = ["# The learned fusion against its SASRec teacher", "",
             f"Written by `python scripts/fusion_report.py` from the predictions in {run.relative_to(REPO)}. "
             "Office_Products, the seed-1 LLM cells (2,000 train rows, one epoch, alpha 0), their SASRec teacher; beta "
             "and the fusion were chosen on valid rows only. Fresh rows: the test rows outside the seed-1 sample of "
             f"1,000 (which the fusion issue's exploratory check looked at): {len(fresh):,} rows no decision has seen. "
             "Hits count an item with the target's title; novel rows: the target's title is not in the history.", ""]
    summary = {}
    for host in HOSTS:
        methods = found[host]
        lines += [f"## {host}", "", "| method | rows | NDCG@10 [95% CI] | HR@10 | NDCG@10, fresh rows |", "|---|---|---|---|---|"]
        for label, r in methods.items():
            on_fresh = restrict_rows(r, fresh).metrics["NDCG@10"] if np.isin(r.rows, fresh).any() else None
            lines.append(f"| {label} | {len(r.ranks):,} | {_ndcg(r)} | {r.metrics['HR@10']:.4f} | "
                         + ("–" if on_fresh is None else f"{on_fresh:.4f}") + " |")
        goal = next((t for t in tests if t["a"] == "SASRec" and t["b"] == f"{host} + learned fusion"
                     and t["metric"] == "NDCG@10" and t["row_set"] == "all"), None)
        if goal is not None:
            base = methods["SASRec"].metrics["NDCG@10"]
            relative = goal["diff"] / base
            p, _ = resolved_p(goal, bound)  # as the Bonferroni line judges it
            met = relative >= GOAL and p < bound and goal["significant"]
            summary[host] = {"relative": relative, "diff": goal["diff"], "low": goal["low"], "high": goal["high"],
                             "relative_ci95": [goal["low"] / base, goal["high"] / base], "p": p, "met": met}
            # The goal is judged on the point estimate; the CI's ends, relative, say how sure the 10% is.
            lines += ["", f"Goal (≥ {GOAL:.0%} above SASRec, significant after Bonferroni at {bound:.2g}): "
                          f"{relative:+.1%} ({goal['diff']:+.4f} [{goal['low']:+.4f}, {goal['high']:+.4f}], relative "
                          f"[{goal['low'] / base:+.1%}, {goal['high'] / base:+.1%}], p {p:.2g} as the Bonferroni line "
                          f"judges it): **{'met' if met else 'not met'}** on the point estimate."]
        recall, gain = fusion_facts(run, host, data, dataset)
        if recall:
            summary.setdefault(host, {})["candidate_recall"] = recall
            lines += ["", f"Target among the candidates ({recall['candidates_per_row']:.1f} titles a row: "
                          f"{recall['beams']} beams ∪ CF top-{recall['k']}): {recall['any']:.1%} of "
                          f"{recall['rows']:,} rows; in the beams {recall['llm_beams']:.1%}, in the CF top-"
                          f"{recall['k']} {recall['cf_top_k']:.1%}; only in the beams {recall['only_llm']:.1%}, only "
                          f"in the CF list {recall['only_cf']:.1%}."]
        if gain:
            summary.setdefault(host, {})["feature_gain"] = gain
            top = sorted(gain.items(), key=lambda kv: -kv[1])
            lines += ["", "Share of the trees' gain: " + ", ".join(f"{k} {v:.2f}" for k, v in top if v >= 0.005) + "."]
        lines.append("")
    if missing:
        lines += [f"Not decoded yet: {', '.join(missing)}.", ""]
    lines += paired_tests_section(tests)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "results.json", {
        "run": str(run.relative_to(REPO)), "fresh_rows": int(len(fresh)), "summary": summary, "missing": missing,
        "methods": {host: {label: {"rows": int(len(r.ranks)), "metrics": r.metrics,
                                   "ci95": {k: list(v) for k, v in r.ci95.items()}}
                           for label, r in found[host].items()} for host in HOSTS},
        "tests": tests})
    return out / "report.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    results = REPO / "docs" / "results" / "fusion-office"
    parser.add_argument("--run", default=str(results / "run" / "Office_Products"), help="the study's dataset folder")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "amazon2018" / "Office_Products"))
    parser.add_argument("--out", default=str(results / "report"))
    args = parser.parse_args(argv)
    print(f"report: {write(Path(args.run).resolve(), Path(args.data), Path(args.out))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
