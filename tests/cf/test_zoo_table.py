"""scripts/cf_zoo_table.py: the README's CF zoo table from run folders (seed 0 row, seed spread, x MostPop)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from tca4rec.cf import train_cf
from tca4rec.cf.run import evaluate_cf

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cf_zoo_table.py"


def table(zoo: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(zoo)], capture_output=True, text=True, timeout=120)


def test_zoo_table_rows_ratios_and_seed_spread(synth_dataset, tmp_path):
    zoo = tmp_path / "zoo"
    ndcg = {}
    for model, seed in [("mostpop", 0), ("sasrec", 0), ("sasrec", 1)]:
        run = zoo / synth_dataset.name / f"{model}-s{seed}"
        train_cf(synth_dataset, model, run, config={"seed": seed, "hidden_size": 16}, epochs=1, limit=200, progress=False)
        ndcg[model, seed] = evaluate_cf(run, synth_dataset, "test", limit=100)["metrics"]["NDCG@10"]
    proc = table(zoo)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("|")[2].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in proc.stdout.splitlines()[2:]}
    assert set(rows) == {"mostpop", "sasrec"}
    sasrec = rows["sasrec"]
    assert sasrec[0] == synth_dataset.name and sasrec[3].startswith(f"{ndcg['sasrec', 0]:.4f} [")
    assert sasrec[5] == f"{ndcg['sasrec', 0] / ndcg['mostpop', 0]:.1f}x"
    seeds = [ndcg["sasrec", 0], ndcg["sasrec", 1]]
    assert sasrec[6] == f"{statistics.mean(seeds):.4f} ± {statistics.stdev(seeds):.4f} (2 seeds)"
    config = json.loads((zoo / synth_dataset.name / "sasrec-s0" / "config.json").read_text())
    assert sasrec[8] == f"{config['epochs_run']} ({config['best_epoch']})"
    assert rows["mostpop"][5] == "" and rows["mostpop"][6] == ""


def test_zoo_table_without_runs_says_so(tmp_path):
    proc = table(tmp_path)
    assert proc.returncode != 0 and "no finished runs" in proc.stderr
