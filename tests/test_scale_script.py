"""scripts/scale_1m.sh, the million-item study cell end to end, run here on a small catalog:
the same stages (synthetic data, SASRec, a tiny LLM trained with soft labels over the trie,
constrained-beam evaluation, the report, recommend), each timed with its peak memory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_scale_script_runs_a_study_cell_and_recommends(tmp_path):
    out = tmp_path / "scale"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "scale_1m.sh"), "--items", "3000", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("tiny LLM", "study (3000 items)", "recommend (3000 items)"):
        assert re.search(rf"\[scale\] {re.escape(name)}: [\d.]+ s, peak memory \d+ MiB", proc.stdout), name

    data = json.loads((out / "synth" / "data" / "data_stat.json").read_text())
    assert data["num_item"] == 3000
    run = out / "synth" / "llm" / "tallrec-sasrec-a0.1-s0"
    metrics = json.loads((run / "metrics_test.json").read_text())
    assert metrics["rows"] == 20 and metrics["alpha"] == 0.1
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in log) == 4
    assert (out / "report" / "report.md").is_file()
    recommended = re.findall(r"^[│|]\s*\d+\s*[│|]", proc.stdout, flags=re.M)  # one table row per item
    assert len(recommended) == 10, proc.stdout[-2000:]
