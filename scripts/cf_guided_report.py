"""Table of the CF-guided decoding comparison from predictions files (``docs/results/cf-guided``).

Usage: python scripts/cf_guided_report.py OUT.md LABEL=PREDICTIONS.jsonl ... (the first is the
reference of the paired tests). Every method is scored on the same first rows (the fewest
any file holds): HR/NDCG@10 with 95% bootstrap CIs, and for each method against the
reference the paired bootstrap of NDCG@10 with its minimum detectable effect (80% power).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from tca4rec.evaluate.metrics import bootstrap_ci, paired_bootstrap, summarize


def read_ranks(path: str) -> np.ndarray:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return np.array([r["rank"] for r in sorted(rows, key=lambda r: r["row"])])


def main(out: str, specs: list[str]) -> None:
    methods = dict(spec.split("=", 1) for spec in specs)
    ranks = {label: read_ranks(path) for label, path in methods.items()}
    n = min(len(r) for r in ranks.values())
    ranks = {label: r[:n] for label, r in ranks.items()}
    lines = [f"Same first {n} test rows for every method.", "",
             "| method | HR@10 [95% CI] | NDCG@10 [95% CI] | HR@1 |", "|---|---|---|---|"]
    for label, r in ranks.items():
        m, ci = summarize(r), bootstrap_ci(r)
        lines.append(f"| {label} | {m['HR@10']:.3f} [{ci['HR@10'][0]:.3f}, {ci['HR@10'][1]:.3f}] | "
                     f"{m['NDCG@10']:.3f} [{ci['NDCG@10'][0]:.3f}, {ci['NDCG@10'][1]:.3f}] | {m['HR@1']:.3f} |")
    reference = next(iter(ranks))
    lines += ["", f"Paired bootstrap of NDCG@10 against {reference} (2,000 resamples of the rows):", "",
              "| method | ΔNDCG@10 [95% CI] | significant | MDE (80% power) | rows that differ |", "|---|---|---|---|---|"]
    for label, r in list(ranks.items())[1:]:
        p = paired_bootstrap(ranks[reference], r)
        lines.append(f"| {label} | {p['diff']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}] | "
                     f"{'yes' if p['significant'] else 'no'} | {p['mde80']:.4f} | {p['discordant']} |")
    Path(out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
