"""``tca4rec cf sweep``: one run per grid setting, valid metrics read back, resume, clear refusals."""

from __future__ import annotations

import json

import pytest

from tca4rec.cf import sweep as sweep_module
from tca4rec.cf.sweep import grid_settings, setting_name, sweep_cf
from tca4rec.cli import main
from tca4rec.errors import ConfigError, RunError

BASE = {"num_layers": 1, "epochs": 1, "batch_size": 128}


def test_grid_is_the_cartesian_product_in_order():
    assert grid_settings({"a": [1, 2], "b": [0.5]}) == [{"a": 1, "b": 0.5}, {"a": 2, "b": 0.5}]
    assert grid_settings({}) == [{}] and setting_name({}) == "default"
    assert setting_name({"mask_prob": 0.2, "num_negatives": 0}) == "mask_prob=0.2,num_negatives=0"
    with pytest.raises(ConfigError, match="at least one value"):
        grid_settings({"a": []})


def test_sweep_trains_each_setting_reports_valid_metrics_and_resumes(synth_dataset, tmp_path, monkeypatch):
    rows = sweep_cf(synth_dataset, "sasrec", tmp_path, {"hidden_size": [8, 16]}, base=BASE, limit=60, progress=False)
    assert sorted(r["run"] for r in rows) == ["hidden_size=16", "hidden_size=8"]
    assert [r["valid_NDCG@10"] for r in rows] == sorted((r["valid_NDCG@10"] for r in rows), reverse=True)
    for row in rows:
        valid = json.loads((tmp_path / row["run"] / "metrics_valid.json").read_text())
        config = json.loads((tmp_path / row["run"] / "config.json").read_text())
        assert valid["split"] == "valid" and valid["rows"] == 60 and row["valid_NDCG@10"] == valid["metrics"]["NDCG@10"]
        assert config["config"]["hidden_size"] == row["setting"]["hidden_size"] and config["config"]["num_layers"] == 1
    assert len(json.loads((tmp_path / "sweep.json").read_text())["rows"]) == 2
    # A second call reuses the finished runs instead of training them again.
    monkeypatch.setattr(sweep_module, "train_cf", lambda *a, **k: pytest.fail("retrained a finished setting"))
    assert sweep_cf(synth_dataset, "sasrec", tmp_path, {"hidden_size": [8, 16]}, base=BASE, limit=60) == rows
    with pytest.raises(RunError, match="holds another run"):  # same folder name, other fixed options
        sweep_cf(synth_dataset, "sasrec", tmp_path, {"hidden_size": [8]}, base={**BASE, "lr": 0.01}, limit=60)


def test_bad_grids_fail_before_any_training(synth_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_module, "train_cf", lambda *a, **k: pytest.fail("trained despite a bad grid"))
    with pytest.raises(ConfigError, match="dropout"):
        sweep_cf(synth_dataset, "sasrec", tmp_path, {"dropout": [0.1, 1.5]})
    with pytest.raises(ConfigError, match="both fixed and swept"):
        sweep_cf(synth_dataset, "sasrec", tmp_path, {"lr": [0.1, 0.2]}, base={"lr": 0.3})


def test_cli_sweep(synth_dir, tmp_path, capsys):
    args = ["cf", "sweep", "--data", str(synth_dir), "--model", "gru4rec", "--out", str(tmp_path), "--epochs", "1",
            "--limit", "40", "--quiet", "--set", "hidden_size=8", "--set", "dropout=0.0,0.3"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "dropout=0.0" in out and "dropout=0.3" in out and "valid NDCG@10" in out
    stored = json.loads((tmp_path / "sweep.json").read_text())
    assert stored["base"] == {"hidden_size": 8, "epochs": 1} and stored["grid"] == {"dropout": [0.0, 0.3]}
    assert main(args[:-2] + ["--set", "dropout=0.1,lots"]) == 2
    assert "dropout needs a float" in capsys.readouterr().err
