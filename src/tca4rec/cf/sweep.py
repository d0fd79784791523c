"""Tune a CF model on your data: train a small grid of settings and compare valid NDCG@10.

``sweep_cf`` trains one run folder per combination of the grid's values (the cartesian
product, on top of the model's defaults and ``base`` overrides) and reports, per setting,
the best valid NDCG@10 / HR@10 (full ranking, the early-stopping metric), the best epoch and
the train time. Only the valid split is read: the test split stays untouched for the final
number. A finished setting whose run folder holds the same config and dataset is reused, so
an interrupted sweep resumes where it stopped. ``sweep.json`` in the sweep folder holds the
table (written atomically after every setting).
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

from tca4rec.cf.run import CONFIG_FILE, read_run_config
from tca4rec.cf.train import make_config, train_cf
from tca4rec.data import RecDataset
from tca4rec.errors import ConfigError, RunError
from tca4rec.io import atomic_write_json, check_output, own_folder
from tca4rec.validate import loads_json

SWEEP_FILE = "sweep.json"


def grid_settings(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of the grid's values, in the order given (first key varies slowest)."""
    for key, values in grid.items():
        if not values:
            raise ConfigError(f"--set {key}: give at least one value")
    return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]


def setting_name(setting: dict[str, Any]) -> str:
    """A folder name for one setting, e.g. ``mask_prob=0.2,num_negatives=0`` (``default`` when empty)."""
    return ",".join(f"{k}={v}" for k, v in setting.items()) or "default"


def _finished_run(run_dir: Path, config: dict, dataset: RecDataset, limit: int | None) -> bool:
    if not (run_dir / CONFIG_FILE).is_file():
        return False
    stored = read_run_config(run_dir)
    return (stored["config"] == config and stored["dataset"].get("fingerprint") == dataset.fingerprint()
            and stored.get("limit") == limit)


def sweep_cf(dataset: RecDataset, model_name: str, out_dir: str | Path, grid: dict[str, list[Any]], *,
             base: dict[str, Any] | None = None, limit: int | None = None, progress: bool = True) -> list[dict]:
    """Train every setting of ``grid`` (over ``base`` overrides) under ``out_dir``; rows best valid NDCG@10 first."""
    out_dir = check_output(out_dir, "--out", own_folder((SWEEP_FILE, "*=*", "default")))
    base = dict(base or {})
    overlap = sorted(set(base) & set(grid))
    if overlap:
        raise ConfigError(f"option(s) {', '.join(overlap)} are both fixed and swept; give each once")
    settings = grid_settings(grid)
    configs = [make_config(model_name, {**base, **setting}) for setting in settings]  # every error before training
    rows: list[dict] = []
    for setting, config in zip(settings, configs, strict=True):
        run_dir = out_dir / setting_name(setting)
        as_dict = dataclasses.asdict(config)
        if run_dir.exists() and not _finished_run(run_dir, as_dict, dataset, limit):
            raise RunError(f"{run_dir} holds another run (other config, dataset or --limit); "
                           "choose another --out or remove it")
        if not run_dir.exists():
            train_cf(dataset, model_name, run_dir, config=config, limit=limit, progress=progress)
        run = read_run_config(run_dir)
        valid = loads_json((run_dir / "metrics_valid.json").read_text(encoding="utf-8"))["metrics"]
        rows.append({"setting": setting, "run": run_dir.name, "valid_NDCG@10": valid["NDCG@10"],
                     "valid_HR@10": valid["HR@10"], "best_epoch": run["best_epoch"], "epochs_run": run["epochs_run"],
                     "train_seconds": run["train_seconds"]})
        atomic_write_json(out_dir / SWEEP_FILE, {"model": model_name, "dataset": dataset.name, "base": base,
                                                 "grid": grid, "limit": limit, "rows": rows})
    return sorted(rows, key=lambda row: -row["valid_NDCG@10"])
