"""The evidence report is recomputed from committed predictions and agrees with the library's tests."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from tca4rec.data import load_dataset
from tca4rec.evaluate.report import compare, load_run_result

from .conftest import REPO, amazon_path


def _script(name: str):
    """A module of scripts/, loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_evidence_report_recomputes_the_committed_cells(office_dir, tmp_path):
    script = _script("evidence_report")
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


def test_breadth_report_recomputes_the_committed_cells(office_dir, tmp_path):
    """The breadth report reads whatever cells are finished, states the rest, and its tests are the library's."""
    script = _script("breadth_report")
    assert script.main(["--data", str(office_dir), "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    text = (tmp_path / "report.md").read_text()
    assert "## A. Teachers" in text and "## C. Alpha" in text and (tmp_path / "alpha.png").stat().st_size > 1000
    assert set(results["missing"]).isdisjoint(results["cells"])
    assert len(results["missing"]) + len(results["cells"]) == len(script.cell_folders())
    ds = load_dataset(office_dir)
    run = REPO / "docs" / "results" / "breadth" / "run" / "Office_Products"
    a, b = (load_run_result(run / "llm" / f, "test", ds.title_group, histories=ds.split("test").histories)
            for f in ("tallrec-nocf-a0-s1", "tallrec-sasrec-a0.1-s1"))
    t = next(t for t in results["tests"] if t["b"] == "tallrec + TCA4Rec(SASRec)" and t["metric"] == "NDCG@10"
             and t["row_set"] == "all")
    assert t["diff"] == pytest.approx(compare(a, b)["diff"]) and t["rows"] == 1000
    alpha0, alpha01 = (next(r for r in results["alpha"] if r["alpha"] == x) for x in (0, 0.1))
    assert alpha0["NDCG@10"] == pytest.approx(a.metrics["NDCG@10"]) and alpha0["adapter_step"] is None
    from safetensors.numpy import load_file  # the LoRA step, recomputed with numpy

    lower, upper = (load_file(run / "llm" / f / "adapter" / "adapter_model.safetensors")
                    for f in ("tallrec-nocf-a0-s1", "tallrec-sasrec-a0.1-s1"))
    flat = [np.concatenate([w[k].astype(np.float64).ravel() for k in sorted(lower)]) for w in (lower, upper)]
    assert alpha01["adapter_step"] == pytest.approx(np.linalg.norm(flat[1] - flat[0]) / np.linalg.norm(flat[0]))

    # fluency: per token, from the committed per-row sums; each alpha's measures are on the same rows
    fa, fb = (json.loads((run / "llm" / f / "fluency.json").read_text())
              for f in ("tallrec-nocf-a0-s1", "tallrec-sasrec-a0.1-s1"))
    assert alpha01["target_nll"] == pytest.approx(sum(fb["target_row_nll"]) / sum(fb["target_row_tokens"]))
    low, high = alpha01["target_nll_ci95"]
    assert low < alpha01["target_nll"] < high and alpha0["text_nll_ci95"][0] < alpha0["text_nll"]
    t = next(t for t in results["tests"] if t["b"] == "tallrec + TCA4Rec(SASRec)" and t["metric"] == "text NLL")
    assert t["a"] == "tallrec" and t["rows"] == len(fa["text_row_nll"]) == 500
    expected = (np.sum(fb["text_row_nll"]) - np.sum(fa["text_row_nll"])) / np.sum(fa["text_row_tokens"])
    assert t["diff"] == pytest.approx(expected) and t["low"] < expected < t["high"]


def test_fusion_report_on_the_seed1_cells(office_dir, tmp_path, monkeypatch):
    """Run on the office-cpu-seed1 cells (their 1,000 rows are the explored ones: no fresh rows),
    from outside the repository (the fusion's stored CF-run path is relative to its root): the
    goal line follows the library's test, and the candidates' recall from the beams alone is the
    plain decoding's HR@10, computed another way."""
    monkeypatch.chdir(tmp_path)
    script = _script("fusion_report")
    run = REPO / "docs" / "results" / "office-cpu-seed1" / "run" / "Office_Products"
    assert script.main(["--run", str(run), "--data", str(office_dir), "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    tallrec = results["summary"]["tallrec"]
    methods = results["methods"]["tallrec"]
    sasrec, plain = methods["SASRec"]["metrics"], methods["tallrec"]["metrics"]
    fused = methods["tallrec + learned fusion"]["metrics"]
    assert tallrec["diff"] == pytest.approx(fused["NDCG@10"] - sasrec["NDCG@10"])
    assert tallrec["relative"] == pytest.approx(tallrec["diff"] / sasrec["NDCG@10"])
    assert tallrec["relative_ci95"] == pytest.approx([tallrec["low"] / sasrec["NDCG@10"],
                                                      tallrec["high"] / sasrec["NDCG@10"]])
    recall = tallrec["candidate_recall"]
    assert recall["llm_beams"] == pytest.approx(plain["HR@10"]) and recall["any"] >= recall["cf_top_k"]
    assert sum(tallrec["feature_gain"].values()) == pytest.approx(1.0)
    assert results["fresh_rows"] == 4000 and not any(t["row_set"] == "fresh" for t in results["tests"])


@pytest.mark.parametrize("table", sorted((REPO / "docs" / "results").rglob("beta_tuning*.json")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_committed_beta_tuning_table_is_recomputed_from_its_committed_rankings(table):
    """Each tuning table that names its rankings (every beta's, and the CF model's alone) matches
    them: hit ranks found again from the items and the targets' titles, then HR and NDCG."""
    record = json.loads(table.read_text())
    if "predictions" not in record:  # a copy (fusion-office's cells are office-cpu-seed1's): its source has them
        sources = [json.loads(p.read_text()) for p in (REPO / "docs" / "results").glob(
            f"*/run/{table.parents[2].name}/llm/{record['run']}/{table.name}")]
        source = next((s for s in sources if "predictions" in s), None)
        if source is None:
            pytest.skip("a table from before tune-beta kept its rankings")
        assert {key: source[key] for key in record} == record
        return
    title_group = load_dataset(amazon_path(table.parents[2].name)).title_group  # run/<dataset>/llm/<cell>
    by_beta: dict = {}
    for line in (table.parent / record["predictions"]).read_text().splitlines():
        p = json.loads(line)
        hits = [i for i, item in enumerate(p["items"][:10], 1) if title_group[item] == title_group[p["target"]]]
        assert p["rank"] == (hits[0] if hits else 0)
        by_beta.setdefault(p["beta"], []).append(p["rank"])
    expected = {row["beta"]: row for row in record["table"]} | {None: record["cf_alone"]}
    assert set(by_beta) == set(expected) and {len(r) for r in by_beta.values()} == {record["rows"]}
    for beta, ranks in by_beta.items():
        r = np.array(ranks)
        for k in (1, 3, 5, 10):
            hit = (r > 0) & (r <= k)
            assert expected[beta][f"HR@{k}"] == pytest.approx(hit.mean(), abs=1e-12)
            assert expected[beta][f"NDCG@{k}"] == pytest.approx(np.where(hit, 1 / np.log2(r + 1), 0).mean(), abs=1e-12)
    best = max(record["table"], key=lambda row: row["NDCG@10"])
    assert record["best_beta"] == best["beta"]
