"""The CF zoo table (README, "CF model zoo") from the run folders of ``scripts/cf_zoo.sh``.

Usage: python scripts/cf_zoo_table.py ZOO_DIR. ZOO_DIR holds DATASET/MODEL-sSEED run folders,
each with ``config.json`` (train time, epochs) and ``metrics_test.json``. Prints one markdown
row per dataset and model: seed-0 metrics, and where more seeds ran, NDCG@10 as mean ± sample
standard deviation over them; the ratio to MostPop's NDCG@10 on the same dataset.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from tca4rec.cf.run import read_run_config

ORDER = ["mostpop", "sasrec", "bert4rec", "gru4rec", "caser"]


def main(zoo: Path) -> None:
    runs: dict[tuple[str, str], dict[int, tuple[dict, dict]]] = defaultdict(dict)
    for metrics_path in sorted(zoo.glob("*/*-s*/metrics_test.json")):
        run = metrics_path.parent
        model, seed = run.name.rsplit("-s", 1)
        config = read_run_config(run)
        runs[run.parent.name, model][int(seed)] = (config, json.loads(metrics_path.read_text(encoding="utf-8")))
    if not runs:
        sys.exit(f"no finished runs (DATASET/MODEL-sSEED/metrics_test.json) under {zoo}")
    print("| dataset | model | HR@10 | NDCG@10 [95% CI] | HR@1 | x MostPop | NDCG@10 over seeds | train time (s) | epochs (best) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dataset in sorted({d for d, _ in runs}):
        models = sorted((m for d, m in runs if d == dataset), key=lambda m: (ORDER + [m]).index(m))
        pop = runs.get((dataset, "mostpop"), {}).get(0)
        for model in models:
            seeds = runs[dataset, model]
            if 0 not in seeds:
                continue
            config, record = seeds[0]
            metrics = record["metrics"]
            ratio = f"{metrics['NDCG@10'] / pop[1]['metrics']['NDCG@10']:.1f}x" if pop and model != "mostpop" else ""
            low, high = record["ci95"]["NDCG@10"]
            ndcgs = [seeds[s][1]["metrics"]["NDCG@10"] for s in sorted(seeds)]
            spread = (f"{statistics.mean(ndcgs):.4f} ± {statistics.stdev(ndcgs):.4f} ({len(ndcgs)} seeds)"
                      if len(ndcgs) > 1 else "")
            print(f"| {dataset} | {model} | {metrics['HR@10']:.4f} | {metrics['NDCG@10']:.4f} [{low:.4f}, {high:.4f}] | {metrics['HR@1']:.4f} | "
                  f"{ratio} | {spread} | {config['train_seconds']:.0f} | {config['epochs_run']} ({config['best_epoch']}) |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
