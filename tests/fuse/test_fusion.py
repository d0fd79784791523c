"""The learned fusion through a run: the stored model, its refusals, and one fused list for a
history whether it comes from evaluate, recommend (one history or a file) or serve."""

from __future__ import annotations

import json
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from tca4rec.cli import main
from tca4rec.errors import ConfigError, RunError


def test_the_stored_model_is_text_that_loads_to_the_same_scores_and_a_refit_is_identical(
        fused_run, fusion_cf_run, tiny_fusion_config):
    from tca4rec.cf.run import cf_fingerprint
    from tca4rec.fuse.apply import read_beams
    from tca4rec.fuse.features import FEATURE_NAMES, Candidates, candidates_in_chunks
    from tca4rec.fuse.fit import fit_fusion
    from tca4rec.fuse.ranker import lgb_params, train_ranker
    from tca4rec.fuse.store import load_fusion, read_fusion_record
    from tca4rec.llm.run import load_run_signals

    record = read_fusion_record(fused_run)
    assert sorted(p.name for p in (fused_run / "fusion").iterdir()) == ["fusion.json", "model.txt"]
    assert record["features"] == list(FEATURE_NAMES) and record["split"] == "valid" and record["fit_rows"] == 16
    assert record["cf_fingerprint"] == cf_fingerprint(fusion_cf_run) and record["config"]["beams"] == 4
    selection = record["selection"]
    assert len(selection["table"]) == 8 and selection["held_out_rows"] == 4 and selection["fit_rows"] == 12
    assert {key: record["settings"][key] for key in ("num_leaves", "min_data_in_leaf")} in [
        {key: row[key] for key in ("num_leaves", "min_data_in_leaf")} for row in selection["table"]]

    _, _, signals = load_run_signals(fused_run)
    fusion = load_fusion(fused_run, signals)
    rows = signals.dataset.split("valid").head(16)
    _, _, items, scores = read_beams(fused_run, "valid", signals.dataset)
    cands = Candidates.concat([c for *_, c in candidates_in_chunks(
        fusion.table, fusion.cf_model, rows.users, rows.histories, items, scores, 10, rows.targets)])
    settings = record["settings"]
    booster = train_ranker(cands, lgb_params(tiny_fusion_config, settings["num_leaves"],
                                             settings["min_data_in_leaf"]), settings["trees"])
    np.testing.assert_array_equal(booster.predict(cands.features), fusion.booster.predict(cands.features))
    assert fit_fusion(fused_run, config=tiny_fusion_config)["model_sha256"] == record["model_sha256"]


def test_a_fusion_is_refused_with_another_cf_model_catalog_or_llm_weights(
        fused_run, fusion_cf_run, synth_dataset, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from tca4rec.cf import train_cf
    from tca4rec.data import load_dataset
    from tca4rec.data.synth import SynthConfig, write_synthetic_dataset
    from tca4rec.fuse.store import load_fusion
    from tca4rec.llm.run import load_run_signals

    _, _, signals = load_run_signals(fused_run)
    same = tmp_path / "runs" / "sasrec"
    shutil.copytree(fusion_cf_run, same)
    assert load_fusion(fused_run, signals, same).cf_model is not None  # the same model under another path
    shutil.rmtree(same)
    train_cf(synth_dataset, "sasrec", same, epochs=1, limit=100, progress=False)  # another model, that path
    with pytest.raises(ConfigError, match="another CF model than"):
        load_fusion(fused_run, signals, same)
    assert main(["fuse", "apply", "--run", str(fused_run), "--split", "valid", "--cf-run", str(same)]) == 2
    err = capsys.readouterr().err.strip()
    assert "another CF model" in err and "\n" not in err

    other = load_dataset(write_synthetic_dataset(tmp_path / "other", SynthConfig(num_items=300, num_users=200,
                                                                                  seed=1)))
    with pytest.raises(RunError, match="another catalog"):
        load_fusion(fused_run, SimpleNamespace(dataset=other, trie=signals.trie))

    retrained = tmp_path / "retrained"
    shutil.copytree(fused_run, retrained)
    adapter = retrained / "adapter" / "adapter_model.safetensors"
    save_file({name: t + 1e-3 for name, t in load_file(adapter).items()}, adapter)
    with pytest.raises(RunError, match="other weights of the LLM run"):
        load_fusion(retrained, signals)
    shutil.rmtree(retrained / "fusion")
    assert main(["recommend", "--run", str(retrained), "--history", "1", "--fusion"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no learned fusion" in err and "fuse fit" in err and "\n" not in err


def test_evaluate_recommend_and_serve_give_the_same_fused_list_and_the_report_shows_it(
        fused_run, synth_dataset, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from tca4rec.fuse.recommend import recommend_file_fused, recommend_fused
    from tca4rec.llm.recommend import Recommender
    from tca4rec.llm.run import load_llm_run
    from tca4rec.serve.app import create_app, decode_modes
    from tca4rec.serve.batcher import MicroBatcher
    from tca4rec.serve.server import ServeConfig, fused_recommender, run_info
    from tca4rec.study.runs_report import write_runs_report

    assert main(["evaluate", "--run", str(fused_run), "--split", "test", "--limit", "4", "--beams", "4",
                 "--fusion"]) == 0
    assert "metrics_test_fusion.json" in capsys.readouterr().out
    record = json.loads((fused_run / "metrics_test_fusion.json").read_text())
    plain = json.loads((fused_run / "metrics_test.json").read_text())  # written as by a plain evaluation
    assert record["fusion"]["method"] == "learned fusion" and record["rows"] == plain["rows"] == 4
    assert record["beams"] == 4 and record["fusion"]["cf_fingerprint"] and record["model"].endswith("+fusion")
    lines = (fused_run / "predictions_test_fusion.jsonl").read_text()
    assert main(["fuse", "apply", "--run", str(fused_run), "--split", "test"]) == 0  # the same, from the file
    assert (fused_run / "predictions_test_fusion.jsonl").read_text() == lines
    predictions = [json.loads(line) for line in lines.splitlines()]
    test = synth_dataset.split("test")
    histories = [test.history(p["row"]) for p in predictions]

    run = load_llm_run(fused_run)
    for p, history in zip(predictions, histories):
        recs = recommend_fused(fused_run, history, k=4, run=run)
        assert [r.item_id for r in recs] == p["items"]
        np.testing.assert_allclose([r.score for r in recs], p["scores"], atol=1e-5)
    users = tmp_path / "users.jsonl"
    users.write_text("".join(json.dumps({"user": n, "history": h}) + "\n" for n, h in enumerate(histories)))
    recommend_file_fused(fused_run, users, tmp_path / "recs.jsonl", k=4)
    batch = [json.loads(line)["items"] for line in (tmp_path / "recs.jsonl").read_text().splitlines()]
    assert batch == [p["items"] for p in predictions]

    plain_recommender = Recommender(run, beams=4)
    fused = fused_recommender(plain_recommender, None)  # as `tca4rec serve --fusion` builds it
    info = run_info(plain_recommender, ServeConfig(run=str(fused_run), beams=4, fusion=True), fused)
    assert info["fusion"]["model_sha256"] == fused.fusion.record["model_sha256"]
    with pytest.raises(ConfigError, match="serve it with --beams 4"):
        fused_recommender(Recommender(run, beams=5), None)
    app = create_app(plain_recommender, MicroBatcher(decode_modes(plain_recommender, fused), max_wait_s=0.0),
                     {"model": "tiny", "version": "0"}, fused=fused)
    with TestClient(app) as client:
        for p, history in zip(predictions, histories):
            body = client.post("/v1/recommend", json={"history": history, "k": 4}).json()
            assert [item["id"] for item in body["items"]] == p["items"] and body["fusion"] is True
        body = client.post("/v1/recommend", json={"history": histories[0], "k": 4, "fusion": False}).json()
        expected = plain_recommender.decode([histories[0]], 4, 0.0)[0]
        assert [item["id"] for item in body["items"]] == [r.item_id for r in expected] and body["fusion"] is False
        for bad, field in (({"fusion": "yes"}, "fusion"), ({"fusion": 1}, "fusion"),
                           ({"fusion": True, "beta": 1.0}, "beta")):
            response = client.post("/v1/recommend", json={"history": [1], "k": 4, **bad})
            assert response.status_code == 422 and response.json()["field"] == field, response.text
    without = create_app(plain_recommender, MicroBatcher(decode_modes(plain_recommender, None)),
                         {"model": "tiny", "version": "0"})
    with TestClient(without) as client:
        response = client.post("/v1/recommend", json={"history": [1], "k": 4, "fusion": True})
        assert response.status_code == 422 and "no learned fusion" in response.json()["error"]

    capsys.readouterr()
    report = write_runs_report([str(fused_run)], str(synth_dataset.root), "test", str(tmp_path / "report"))
    labels = [result["label"] for result in json.loads((report / "results.json").read_text())["runs"]]
    assert labels == ["tallrec", "tallrec + learned fusion"]  # `tca4rec report RUN`: the fused row beside

    assert main(["evaluate", "--run", str(fused_run), "--limit", "4", "--fusion", "--beta", "1"]) == 2
    assert main(["evaluate", "--run", str(fused_run), "--limit", "4", "--fusion"]) == 2  # 10 beams, fit on 4
    assert main(["recommend", "--run", str(fused_run), "--history", "1", "--fusion", "--beams", "5"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 3 and "--beta" in err[0] and "fit on 4 beams" in err[1] and "--beams" in err[2]



def test_fuse_fit_from_the_command_line(fused_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(fused_run, copy)  # its valid decoding comes along, newer than its weights: reused
    assert main(["fuse", "fit", "--run", str(copy), "--rows", "16", "--k", "10", "--beams", "4"]) == 0
    out = capsys.readouterr().out
    assert "held-out NDCG@10: fusion" in out and "refit on all 16 rows" in out and "evaluate" not in out
    record = json.loads((copy / "fusion" / "fusion.json").read_text())
    assert len(record["selection"]["table"]) == 3 * 2 * 4 and record["config"]["k"] == 10  # the default grid


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(items=[10**9] + d["items"][1:]), r"line 3: item 1000000000 is not an item of the catalog"),
    (lambda d: d.update(row=-1), r"line 3: row -1 is not a row of the split"),
    (lambda d: d.update(row=10**8), r"line 3: row 100000000 is not a row of the split"),
    (lambda d: d["scores"].__setitem__(1, float("nan")), r"line 3: score nan of item \d+ is not a finite number"),
    (lambda d: d["scores"].__setitem__(0, "high"), r"line 3: score 'high' of item \d+ is not a finite number"),
    (lambda d: d.update(items=d["items"][:2], scores=d["scores"][:2]), r"line 3: 2 items; line 1 has 4"),
    (lambda d: d.update(scores=d["scores"][:2]), r"line 3: items and scores must be lists of the same"),
    (lambda d: d.pop("items"), r"line 3 is not a prediction record of a plain decoding"),
    (lambda d: d.update(row=0), r"line 3: row 0 again \(line 1 has it\)"),  # was re-ranked and counted twice
])
def test_a_damaged_predictions_file_is_an_error_naming_its_line_and_field(fused_run, tmp_path, capsys, edit, message):
    """fuse apply reads a decoding from disk: a bad line is named, never re-ranked into wrong results."""
    copy = tmp_path / "copy"
    shutil.copytree(fused_run, copy)
    path = copy / "predictions_valid.jsonl"
    lines = path.read_text().splitlines()
    record = json.loads(lines[2])
    edit(record)
    lines[2] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    assert main(["fuse", "apply", "--run", str(copy), "--split", "valid"]) == 2
    err = capsys.readouterr().err
    assert re.search(f"predictions_valid.jsonl, {message}", err) and "Traceback" not in err, err
    path.write_text("\n".join(lines[:2] + ["not json"] + lines[3:]) + "\n")
    assert main(["fuse", "apply", "--run", str(copy), "--split", "valid"]) == 2
    assert "predictions_valid.jsonl, line 3 is not JSON" in capsys.readouterr().err
    path.write_bytes("\n".join(lines[:2]).encode() + b"\n\xff\n")  # the predictions, not the metrics, are named
    assert main(["fuse", "apply", "--run", str(copy), "--split", "valid"]) == 2
    assert "predictions_valid.jsonl, line 3 is not UTF-8 text" in capsys.readouterr().err
    assert not (copy / "metrics_valid_fusion.json").exists()


@pytest.mark.parametrize("file, content, message", [
    ("model.txt", b"tree\n\xff\xfe garbage", "is not the model fusion.json describes"),
    ("fusion.json", b"\xff{}", "is not a learned-fusion record"),
    ("fusion.json", b"[" * 100_000 + b"]" * 100_000, "is not a learned-fusion record"),
    ("fusion.json", b'{"format": "tca4rec.fusion/1"}', "missing features"),
])
def test_a_damaged_fusion_file_is_one_line_naming_it(fused_run, tmp_path, capsys, file, content, message):
    """A fusion folder damaged by hand or by a copy: refused before anything parses or re-ranks it."""
    copy = tmp_path / "copy"
    shutil.copytree(fused_run, copy)
    (copy / "fusion" / file).write_bytes(content)
    assert main(["recommend", "--run", str(copy), "--history", "1", "--fusion"]) == 2
    err = capsys.readouterr().err.strip()
    assert file in err and message in err and "\n" not in err and "Traceback" not in err, err
