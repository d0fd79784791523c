"""Train/evaluate run folders end to end through the CLI, and the refusals that protect them."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from safetensors.torch import load_file

from tca4rec.cf import evaluate_cf, load_cf_run, train_cf
from tca4rec.cli import main
from tca4rec.data import RecDataset
from tca4rec.errors import RunError

FAST = {"hidden_size": 16, "num_layers": 1}


@pytest.fixture(scope="module")
def sasrec_run(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cf") / "sasrec"
    code = main(["cf", "train", "--data", str(synth_dir), "--model", "sasrec", "--out", str(out), "--epochs", "3",
                 "--hidden-size", "32", "--set", "num_layers=1", "--lr", "0.01", "--batch-size", "128", "--quiet"])
    assert code == 0
    return out


def test_cli_train_then_evaluate_round_trip(sasrec_run, synth_dataset, capsys):
    config = json.loads((sasrec_run / "config.json").read_text())
    assert config["model"] == "sasrec" and config["config"]["hidden_size"] == 32 and config["config"]["num_layers"] == 1
    assert config["dataset"]["fingerprint"] == synth_dataset.fingerprint()
    assert 1 <= config["best_epoch"] <= config["epochs_run"] <= 3
    log = [json.loads(line) for line in (sasrec_run / "train_log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == list(range(1, config["epochs_run"] + 1))
    best_valid = max(e["valid"]["NDCG@10"] for e in log)
    valid = json.loads((sasrec_run / "metrics_valid.json").read_text())
    assert valid["metrics"]["NDCG@10"] == pytest.approx(best_valid)

    capsys.readouterr()
    assert main(["cf", "evaluate", "--run", str(sasrec_run), "--split", "test", "--limit", "50"]) == 0
    assert "NDCG@K" in capsys.readouterr().out
    record = json.loads((sasrec_run / "metrics_test.json").read_text())
    assert record["rows"] == 50 and record["split"] == "test"
    predictions = [json.loads(line) for line in (sasrec_run / "predictions_test.jsonl").read_text().splitlines()]
    assert len(predictions) == 50
    test = synth_dataset.split("test")
    assert [p["target"] for p in predictions] == test.targets[:50].tolist()
    assert all(len(p["items"]) == 10 and 0 not in p["items"] for p in predictions)
    assert all(p["titles"] == [synth_dataset.titles[i] for i in p["items"]] for p in predictions)
    assert all(p["target_title"] == synth_dataset.titles[p["target"]] for p in predictions)
    assert all(p["scores"] == sorted(p["scores"], reverse=True) for p in predictions)
    # The metrics recorded are exactly the ones recomputed from the written predictions' ranks.
    ranks = np.array([p["rank"] for p in predictions])
    hits = np.mean([0 < r <= 10 for r in ranks])
    assert record["metrics"]["HR@10"] == pytest.approx(hits)


def test_sasrec_beats_mostpop_on_synthetic(sasrec_run, synth_dataset, tmp_path):
    pop = train_cf(synth_dataset, "mostpop", tmp_path / "pop", progress=False)
    sasrec = evaluate_cf(sasrec_run, synth_dataset, "test")["metrics"]["NDCG@10"]
    mostpop = evaluate_cf(pop, synth_dataset, "test")["metrics"]["NDCG@10"]
    assert sasrec > 1.2 * mostpop


def test_existing_run_needs_overwrite(sasrec_run, synth_dir, capsys):
    before = (sasrec_run / "model.safetensors").read_bytes()
    code = main(["cf", "train", "--data", str(synth_dir), "--model", "mostpop", "--out", str(sasrec_run)])
    assert code == 2
    assert "needs --overwrite" in capsys.readouterr().err
    assert (sasrec_run / "model.safetensors").read_bytes() == before


def test_overwrite_replaces_and_same_seed_gives_same_weights(synth_dataset, tmp_path):
    options = {**FAST, "seed": 3}
    first = load_file(train_cf(synth_dataset, "bert4rec", tmp_path / "a", config=options, epochs=1, limit=200,
                               progress=False) / "model.safetensors")
    train_cf(synth_dataset, "mostpop", tmp_path / "b", progress=False)
    second = load_file(train_cf(synth_dataset, "bert4rec", tmp_path / "b", config=options, epochs=1, limit=200,
                                overwrite=True, progress=False) / "model.safetensors")
    assert json.loads((tmp_path / "b" / "config.json").read_text())["model"] == "bert4rec"
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[k].numpy(), second[k].numpy()) for k in first)
    assert not list(tmp_path.glob(".*"))  # no staging folders left behind


def test_a_run_another_process_trains_is_refused(synth_dataset, tmp_path):
    from tca4rec.io import exclusive_use

    out = tmp_path / "mostpop"
    with exclusive_use(out, "train"):
        with pytest.raises(RunError, match="mostpop is in use: another tca4rec process .* is running train on it"):
            train_cf(synth_dataset, "mostpop", out, progress=False)
    assert not out.exists()
    assert train_cf(synth_dataset, "mostpop", out, progress=False) == out  # free once the other is done


def test_foreign_dataset_is_refused(sasrec_run, synth_dataset):
    titles = list(synth_dataset.titles)
    titles[1] = titles[1] + " (renamed)"
    other = RecDataset("other", titles, synth_dataset.brands, synth_dataset.splits, synth_dataset.num_users)
    with pytest.raises(RunError, match="trained on another dataset"):
        load_cf_run(sasrec_run, other)
    assert load_cf_run(sasrec_run, synth_dataset).num_items == synth_dataset.num_items


class Exploit:
    """Unpickling this creates a marker file: proof that a loader ran pickle."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_checkpoints_are_never_unpickled(sasrec_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(sasrec_run, run)
    Exploit.marker = tmp_path / "pwned"
    for name in ("model.pt", "model.bin", "pytorch_model.bin"):
        (run / name).write_bytes(pickle.dumps(Exploit()))
    load_cf_run(run)  # loads the safetensors weights, ignores the pickles
    (run / "model.safetensors").unlink()
    with pytest.raises(RunError, match="model.safetensors is missing"):
        load_cf_run(run)
    (run / "model.safetensors").write_bytes(pickle.dumps(Exploit()))  # a pickle under the safe name
    with pytest.raises(RunError, match="cannot load"):
        load_cf_run(run)
    assert not Exploit.marker.exists()


def test_missing_or_incomplete_run_folder(tmp_path, capsys):
    with pytest.raises(RunError, match="does not exist"):
        load_cf_run(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    assert main(["cf", "evaluate", "--run", str(tmp_path / "half")]) == 2
    assert "config.json is missing" in capsys.readouterr().err
    llm_run = tmp_path / "llm"  # an LLM run given where a CF run belongs (--cf-run): named as such
    llm_run.mkdir()
    (llm_run / "config.json").write_text('{"format": "tca4rec.llm_run/1", "config": {}}')
    assert main(["cf", "evaluate", "--run", str(llm_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {llm_run} is not a CF run folder (its config.json is a 'tca4rec.llm_run/1' record; "
                   "a CF run is what `tca4rec cf train` writes)"), err


@pytest.mark.parametrize("damaged", [b'{"model": "\xff"}', b"[" * 100_000], ids=["not-utf8", "too-deep"])
def test_a_config_json_that_is_not_json_is_one_line_naming_it(sasrec_run, tmp_path, capsys, damaged):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(sasrec_run, run)
    (run / "config.json").write_bytes(damaged)
    assert main(["cf", "evaluate", "--run", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{run / 'config.json'} is not a valid CF run config" in err and "\n" not in err, err


@pytest.mark.parametrize("change, needle", [
    (lambda c: c["dataset"].update(num_items="abc"), "field 'dataset.num_items': 'abc' is not an integer"),
    (lambda c: c["config"].update(hidden_size="big"), "field 'config.hidden_size': 'big' is not an integer"),
], ids=["num_items", "hidden_size"])
def test_wrong_types_in_config_json_name_the_file_and_field(sasrec_run, tmp_path, change, needle):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(sasrec_run, run)
    config = json.loads((run / "config.json").read_text())
    change(config)
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match=f"{run / 'config.json'}: {needle}"):
        load_cf_run(run)
