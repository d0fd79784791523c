"""scripts/gpu_study.sh, the one-command GPU study, run here on the CPU at toy size (--smoke):
the same stages as on a lent GPU (carried inputs, CF teacher, every LLM cell at once under one
time budget, report, packing into $OUT), so that no device minute is spent on a bug."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_study_script_runs_end_to_end_at_toy_size(tmp_path):
    out, study = tmp_path / "OUT", tmp_path / "study"
    out.mkdir()
    # One host's two cells in parallel: every stage of the script, at half the cost of the smoke's four cells.
    small = ["train.train_limit=16", "train.epochs=1", "train.eval_rows=4", "train.eval_steps=1", "train.save_steps=2",
             "eval_limit=6", "cf.epochs=1", f"out={study}", "grid=[{host: [msl], cf: [sasrec], alpha: [0, 0.1]}]"]
    cmd = ["bash", str(REPO / "scripts" / "gpu_study.sh"), "--smoke", "--budget", "900", "--reserve", "30",
           "--jobs", "2"]
    for item in small:
        cmd += ["--set", item]
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[gpu_study +" in proc.stdout and "done (status 0)" in proc.stdout  # every stage is timed

    report = json.loads((study / "report" / "results.json").read_text())
    methods = report["datasets"]["synthetic"]["methods"]
    assert len(methods) == 3 and all(m["rows"] == 6 for m in methods)  # SASRec + 2 LLM cells, same rows
    assert len(report["datasets"]["synthetic"]["significance"]) == 4  # (NDCG@10, HR@10) x (all, novel rows)
    for cell in ("msl-nocf-a0-s0", "msl-sasrec-a0.1-s0"):
        config = json.loads((study / "synthetic" / "llm" / cell / "config.json").read_text())["config"]
        assert config["max_minutes"] > 0 and config["budget_eval_rows"] == 6

    with tarfile.open(out / "report.tgz") as tar:
        names = tar.getnames()
    assert "report/report.md" in names and any(n.startswith("logs/") for n in names)
    parts = sorted(out.glob("runs.tgz.part*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)


@pytest.mark.parametrize("path", sorted((REPO / "docs" / "results").glob("*.yaml")), ids=lambda p: p.name)
def test_every_committed_study_file_is_valid(path):
    """The committed study files load with every check a run makes first (nothing is created)."""
    from tca4rec.study.runner import load_study

    study = load_study(path)
    assert study.config.llm_cells()


def test_the_full_data_recipe_is_the_released_codes():
    """scripts/gpu_study.sh --full: all train rows, up to 10 epochs, valid HR@3 every 2 epochs, patience 3."""
    from tca4rec.study.config import StudyConfig

    config = StudyConfig.from_yaml(REPO / "docs" / "results" / "gpu-office-full.yaml")
    steps_per_epoch = -(-10_000 // config.train["batch_size"])
    assert "train_limit" not in config.train and config.train["epochs"] == 10 and config.train["patience"] == 3
    assert config.train["eval_steps"] == 2 * steps_per_epoch and config.seeds == [0, 1] and config.eval_limit is None
    assert {(c.host, c.alpha) for c in config.llm_cells()} == {(h, a) for h in ("tallrec", "msl") for a in (0, 0.1)}
    assert "--full) CONFIG=docs/results/gpu-office-full.yaml" in (REPO / "scripts" / "gpu_study.sh").read_text()
