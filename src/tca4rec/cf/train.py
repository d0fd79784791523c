"""Train a CF model on a dataset's train rows and write a run folder.

Only train rows are training data: each row's history + target (the models also learn
from the prefixes inside that sequence). Valid and test histories hold other rows'
targets (DESIGN.md, "Data"), so they are prediction inputs only. Training stops early on
valid NDCG@10 with full ranking, keeps the best epoch, and writes, atomically:
``config.json``, ``model.safetensors``, ``train_log.jsonl``, ``metrics_valid.json``.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tca4rec.cf.base import CFConfig, CFModel
from tca4rec.cf.run import CF_RUN_FILES, CONFIG_FILE, WEIGHTS_FILE, file_sha256, read_run_config, split_ranks
from tca4rec.cf.zoo import cf_model_class
from tca4rec.data import RecDataset
from tca4rec.errors import ConfigError, RunError
from tca4rec.evaluate.metrics import metrics_record, summarize
from tca4rec.io import (atomic_dir, atomic_save_tensors, atomic_write_json, atomic_write_jsonl, check_own_folder,
                        exclusive_use)


def make_config(model_name: str, config: CFConfig | dict[str, Any] | None) -> CFConfig:
    """The model's config class from an instance, a dict of overrides, or defaults."""
    config_class = cf_model_class(model_name).config_class
    if config is None:
        return config_class()
    if isinstance(config, dict):
        return config_class.from_dict(config)
    if not isinstance(config, config_class):
        raise ConfigError(f"model '{model_name}' needs a {config_class.__name__}, got {type(config).__name__}")
    return config


def _cpu_state(model: CFModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _run_epoch(model: CFModel, optimizer, accelerator, tensors, batch_size: int, generator) -> float:
    users, histories, targets = tensors
    order = torch.randperm(len(targets), generator=generator)
    model.train()
    total, batches = 0.0, 0
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        loss = model.loss(*(t[batch].to(accelerator.device) for t in (users, histories, targets)))
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        total += float(loss.detach())
        batches += 1
    return total / max(batches, 1)


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """RunError unless ``out_dir`` is new (or an empty folder), or ``overwrite`` and it is a CF
    run this project wrote, holding nothing else: ``--overwrite`` never deletes a person's files."""
    if (not out_dir.exists() and not out_dir.is_symlink()) or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return
    if not out_dir.is_dir():
        raise RunError(f"--out {out_dir} is a file, not a run folder; choose another --out")
    if not overwrite:
        raise RunError(f"run folder {out_dir} exists; a run folder that exists needs --overwrite")
    check_own_folder(out_dir, CF_RUN_FILES, "tca4rec CF run")
    try:
        read_run_config(out_dir)
    except RunError:
        raise RunError(f"{out_dir} is not a tca4rec CF run folder (no valid {CONFIG_FILE}); "
                       "refusing to delete it") from None


def _write_run(out_dir: Path, overwrite: bool, files: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
    """Build the run folder beside ``out_dir`` and swap it in, so a crash leaves no half run."""
    old = out_dir.with_name(f".{out_dir.name}.old")
    check_out_dir(out_dir, overwrite)  # again: the folder may have changed during training
    if out_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
    try:
        with atomic_dir(out_dir) as tmp:
            atomic_save_tensors(tmp / WEIGHTS_FILE, weights)
            # The weights' hash goes into config.json, which is always kept: the run stays
            # identifiable (cf_fingerprint) when its weights are not (a study committed without them).
            files[CONFIG_FILE] = {**files[CONFIG_FILE], "weights_sha256": file_sha256(tmp / WEIGHTS_FILE)}
            for name, content in files.items():
                (atomic_write_jsonl if name.endswith(".jsonl") else atomic_write_json)(tmp / name, content)
    except BaseException:
        if old.exists() and not out_dir.exists():
            old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def train_cf(dataset: RecDataset, model_name: str, out_dir: str | Path, *,
             config: CFConfig | dict[str, Any] | None = None, epochs: int | None = None, limit: int | None = None,
             overwrite: bool = False, progress: bool = True) -> Path:
    """Train ``model_name`` on ``dataset``'s train rows (the first ``limit`` of them) into ``out_dir``.

    ``limit`` also caps the valid rows used for early stopping. Same config and seed give
    the same weights on CPU. Returns ``out_dir``.
    """
    from accelerate import Accelerator

    out_dir = Path(out_dir)
    with exclusive_use(out_dir, "train"):
        check_out_dir(out_dir, overwrite)
        if limit is not None and limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {limit}")
        cfg = make_config(model_name, config)
        if epochs is not None:
            cfg = dataclasses.replace(cfg, epochs=epochs)
        train = dataset.split("train").head(limit)
        if len(train) == 0:
            raise ConfigError(f"dataset '{dataset.name}' has no train rows")
        valid_rows = len(dataset.split("valid").head(limit))

        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        accelerator = Accelerator()
        model = cf_model_class(model_name)(cfg, dataset.num_items, dataset.num_users).to(accelerator.device)
        model.fit_statistics(train.histories, train.targets)
        log: list[dict] = []
        started = time.perf_counter()
        best_epoch, best_ndcg, best_ranks = 0, -1.0, None
        best_state = _cpu_state(model)
        if model.trainable and cfg.epochs > 0:
            optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            model, optimizer = accelerator.prepare(model, optimizer)
            tensors = tuple(torch.tensor(a, dtype=torch.long) for a in (train.users, train.histories, train.targets))
            bar = tqdm(range(1, cfg.epochs + 1), desc=f"{model_name} on {dataset.name}", unit="epoch",
                       disable=not progress)
            for epoch in bar:
                loss = _run_epoch(model, optimizer, accelerator, tensors, cfg.batch_size, generator)
                if not math.isfinite(loss):  # the weights are lost too: never saved as a model
                    raise RunError(f"{model_name} on {dataset.name}: the training loss became {loss} in epoch "
                                   f"{epoch} (lr {cfg.lr:g} too high?); nothing was saved")
                ranks = split_ranks(accelerator.unwrap_model(model), dataset, "valid", limit)[0]
                valid = summarize(ranks)
                log.append({"epoch": epoch, "loss": loss, "valid": valid, "seconds": time.perf_counter() - started})
                if valid["NDCG@10"] > best_ndcg:
                    best_epoch, best_ndcg, best_ranks = epoch, valid["NDCG@10"], ranks
                    best_state = _cpu_state(accelerator.unwrap_model(model))
                bar.set_postfix(loss=f"{loss:.3f}", ndcg10=f"{valid['NDCG@10']:.4f}", best=best_epoch)
                if epoch - best_epoch >= cfg.patience:
                    break
        if best_ranks is None:  # not trained: the train-row statistics (or initial weights) are the model
            best_ranks = split_ranks(model, dataset, "valid", limit)[0]
        seconds = time.perf_counter() - started
        valid_record = metrics_record(best_ranks, split="valid", model=model_name,
                                      extra={"dataset": dataset.name, "limit": limit, "epoch": best_epoch})
        run_config = {
            "model": model_name,
            "config": dataclasses.asdict(cfg),
            "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint(), "num_items": dataset.num_items,
                        "num_users": dataset.num_users, "root": None if dataset.root is None else str(dataset.root)},
            "seed": cfg.seed,
            "train_rows": len(train),
            "valid_rows": valid_rows,
            "limit": limit,
            "best_epoch": best_epoch,
            "epochs_run": len(log),
            "train_seconds": round(seconds, 2),
        }
        _write_run(out_dir, overwrite,
                   {CONFIG_FILE: run_config, "train_log.jsonl": log, "metrics_valid.json": valid_record}, best_state)
    return out_dir
