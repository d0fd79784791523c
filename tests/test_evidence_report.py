"""The evidence report is recomputed from committed predictions and agrees with the library's tests."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tca4rec.data import load_dataset
from tca4rec.evaluate.report import compare, load_run_result

from .conftest import REPO


def test_evidence_report_recomputes_the_committed_cells(office_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("evidence_report", REPO / "scripts" / "evidence_report.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--data", str(office_dir), "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert "tallrec s0" in results["cells"] and "novel rows" in (tmp_path / "report.md").read_text()
    ds = load_dataset(office_dir)
    base = REPO / "docs" / "results" / "office-cpu" / "run" / "Office_Products" / "llm"
    a, b = (load_run_result(base / f, "test", ds.title_group, histories=ds.split("test").histories)
            for f in ("tallrec-nocf-a0-s0", "tallrec-sasrec-a0.1-s0"))
    novel = next(t for t in results["tests"] if t["kind"] == "seed 0" and t["metric"] == "NDCG@10"
                 and t["row_set"] == "novel" and t["a"] == "tallrec s0")
    assert novel["diff"] == pytest.approx(compare(a, b, "NDCG@10", "novel")["diff"])
    assert novel["rows"] == int((~a.repeat).sum())
