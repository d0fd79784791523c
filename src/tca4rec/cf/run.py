"""Using a trained CF run folder: load it safely, rank items, evaluate a split.

A run folder holds ``config.json`` and ``model.safetensors``. Weights are read only with
safetensors (never pickle), so a ``model.pt`` or ``model.bin`` someone drops in the folder
is ignored. ``topk`` is the ranking primitive other stages reuse (full ranking over all
items; ties go to the smaller item id so results do not depend on the sort kernel).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from tca4rec.cf.base import CFModel
from tca4rec.cf.zoo import cf_model_class
from tca4rec.data import RecDataset
from tca4rec.errors import ConfigError, RunError
from tca4rec.evaluate.metrics import exclude_record, hit_ranks, metrics_record, prediction_records
from tca4rec.io import atomic_write_json, atomic_write_jsonl, file_sha256, load_tensors
from tca4rec.validate import check_fields, check_value, loads_json

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# Logits scored at once in full ranking: rows per chunk shrink as the catalog grows, so a
# million-item catalog ranks 16 rows at a time in 64 MB instead of a [rows x N] matrix.
RANKING_CHUNK_ELEMENTS = 1 << 24


# Everything a CF run folder holds (top level): what --overwrite may delete, and nothing else.
CF_RUN_FILES = (CONFIG_FILE, WEIGHTS_FILE, "train_log.jsonl", "metrics_*.json", "predictions_*.jsonl")


def cf_fingerprint(run_dir: str | Path) -> str:
    """A short hash of what a CF run is (model, catalog and trained weights), whatever path
    names it: what a tuned beta is tied to, so another model at the same path is never taken
    for it. The weights' hash is read from config.json (written there at training), so a run
    kept without its weights is still known; older runs hash the weights file."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    weights = config.get("weights_sha256")
    if weights is None:
        path = run_dir / WEIGHTS_FILE
        weights = file_sha256(path) if path.is_file() else "missing"
    identity = f"{config['model']}\x00{config['dataset'].get('fingerprint')}\x00{weights}"
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def read_run_config(run_dir: str | Path) -> dict:
    """The run's ``config.json``; RunError if the folder or file is missing or unreadable, or a value
    has the wrong type (checked like a study file: the message names the file and the field)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"CF run folder {run_dir} does not exist")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} is not a complete CF run folder: {CONFIG_FILE} is missing")
    try:
        config = loads_json(path.read_text(encoding="utf-8"))
        if isinstance(config, dict) and "model" not in config and "format" in config:  # e.g. an LLM run's
            raise RunError(f"{run_dir} is not a CF run folder (its {CONFIG_FILE} is a {config['format']!r} record; "
                           "a CF run is what `tca4rec cf train` writes)")
        _ = config["model"], config["config"], config["dataset"]["num_items"], config["dataset"]["num_users"]
    except (ValueError, KeyError, TypeError) as e:  # ValueError: not JSON, or not UTF-8
        raise RunError(f"{path} is not a valid CF run config ({type(e).__name__}: {e})") from None
    try:
        check_value(config["model"], str, "model")
        check_value(config["config"], dict, "config")
        check_fields(cf_model_class(config["model"]).config_class, config["config"], "config")
        for key in ("num_items", "num_users"):
            check_value(config["dataset"][key], int, f"dataset.{key}")
    except ConfigError as e:
        raise RunError(f"{path}: {e}") from None
    return config


def check_dataset(config: dict, dataset: RecDataset, run_dir: Path) -> None:
    """RunError unless ``dataset`` has the catalog the run was trained on."""
    trained = config["dataset"]
    if trained["num_items"] != dataset.num_items or trained.get("fingerprint") != dataset.fingerprint():
        raise RunError(f"the checkpoint in {run_dir} was trained on another dataset "
                       f"('{trained.get('name')}', {trained['num_items']} items, fingerprint {trained.get('fingerprint')}), "
                       f"not '{dataset.name}' ({dataset.num_items} items, fingerprint {dataset.fingerprint()})")


def load_cf_run(run_dir: str | Path, dataset: RecDataset | None = None) -> CFModel:
    """The trained model of ``run_dir`` in eval mode, from safetensors only."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    if dataset is not None:
        check_dataset(config, dataset, run_dir)
    weights = run_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise RunError(f"{run_dir} is not a complete CF run folder: {WEIGHTS_FILE} is missing")
    try:
        cls = cf_model_class(config["model"])
        model = cls(cls.config_class.from_dict(config["config"]), config["dataset"]["num_items"],
                    config["dataset"]["num_users"])
        model.load_state_dict(load_tensors(weights))
    except (ConfigError, RuntimeError) as e:
        raise RunError(f"cannot load the CF checkpoint in {run_dir}: {str(e).splitlines()[0]}") from None
    return model.eval()


@torch.no_grad()
def topk(model: CFModel, users, histories, k: int = 10, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items per row: (item ids int64 [R, k], logits float32 [R, k]), best first.

    ``users`` [R] and ``histories`` [R, H] (left-padded) may be numpy arrays or tensors.
    The padding item never appears. Ties are broken by the smaller item id. Rows are scored
    ``batch_size`` at a time, fewer where the catalog is large (RANKING_CHUNK_ELEMENTS logits).
    """
    if not 1 <= k <= model.num_items:
        raise ConfigError(f"k must be in 1..{model.num_items} (the number of items), got {k}")
    was_training = model.training
    model.eval()
    device = model.device
    users = torch.tensor(np.asarray(users), dtype=torch.long)  # a copy: dataset arrays are read-only
    histories = torch.tensor(np.asarray(histories), dtype=torch.long)
    ids, scores = [], []
    batch_size = max(1, min(batch_size, RANKING_CHUNK_ELEMENTS // (model.num_items + 1)))
    for start in range(0, len(users), batch_size):
        logits = model(users[start:start + batch_size].to(device), histories[start:start + batch_size].to(device))
        batch_ids, batch_scores = _topk_rows(logits.float(), k)
        ids.append(batch_ids.cpu())
        scores.append(batch_scores.cpu())
    model.train(was_training)
    if not ids:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
    return torch.cat(ids).numpy(), torch.cat(scores).numpy()


def _topk_rows(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, N + 1] -> top-k (ids, scores), ordered by score then smaller id.

    ``torch.topk`` is fast but picks arbitrarily among items tied at the k-th score; only
    rows with such a tie (k-th score == (k+1)-th score) pay for a full stable sort.
    """
    candidate_scores, candidate_ids = logits.topk(k + 1, dim=1)  # k <= N, and logits has N + 1 columns
    top_scores, top_ids = candidate_scores[:, :k], candidate_ids[:, :k]
    by_id = top_ids.argsort(dim=1)
    top_ids, top_scores = top_ids.gather(1, by_id), top_scores.gather(1, by_id)
    by_score = top_scores.argsort(dim=1, descending=True, stable=True)
    top_ids, top_scores = top_ids.gather(1, by_score), top_scores.gather(1, by_score)
    tied = candidate_scores[:, k] == candidate_scores[:, k - 1]
    if tied.any():
        sorted_scores, sorted_ids = logits[tied].sort(dim=1, descending=True, stable=True)
        top_scores[tied], top_ids[tied] = sorted_scores[:, :k], sorted_ids[:, :k]
    return top_ids, top_scores


def split_ranks(model: CFModel, dataset: RecDataset, split: str, limit: int | None = None,
                sample_seed: int | None = None, sample_exclude: tuple[tuple[int, int], ...] = (),
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full ranking of a split's rows: (hit ranks [R], top-10 ids [R, 10], their logits [R, 10])."""
    rows = dataset.split(split).select(limit, sample_seed, sample_exclude)
    ids, scores = topk(model, rows.users, rows.histories, k=min(10, model.num_items))
    return hit_ranks(ids, rows.targets, dataset.title_group), ids, scores


def evaluate_cf(run_dir: str | Path, dataset: RecDataset, split: str = "test", limit: int | None = None,
                sample_seed: int | None = None, sample_exclude: tuple[tuple[int, int], ...] = ()) -> dict:
    """Evaluate a run on ``split``; writes ``metrics_<split>.json`` and ``predictions_<split>.jsonl``.
    ``limit`` rows: the first ones, or a seeded random sample when ``sample_seed`` is given
    (without the rows of the earlier samples ``sample_exclude``, pairs of (limit, seed))."""
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    run_dir = Path(run_dir)
    model = load_cf_run(run_dir, dataset)
    config = read_run_config(run_dir)
    rows = dataset.split(split).select(limit, sample_seed, sample_exclude)
    ranks, ids, scores = split_ranks(model, dataset, split, limit, sample_seed, sample_exclude)
    record = metrics_record(ranks, split=split, model=config["model"],
                            extra={"dataset": dataset.name, "limit": limit, "sample_seed": sample_seed,
                                   **exclude_record(sample_exclude), "run": run_dir.name})
    atomic_write_json(run_dir / f"metrics_{split}.json", record)
    atomic_write_jsonl(run_dir / f"predictions_{split}.jsonl",
                       prediction_records(dataset.titles, rows.row_ids, rows.users, rows.targets, ranks, ids, scores))
    return record
