"""A fitted learned fusion in its run folder, and the checks that keep it to what it was fit with.

``RUN/fusion/model.txt`` is LightGBM's own text format of the ranker (never a pickle) and
``RUN/fusion/fusion.json`` says what it is: the feature names in column order, its
``FusionConfig``, the chosen settings and the selection table, the rows it was fit on, and
what it belongs to: the CF run (path and content fingerprint, ``cf.run.cf_fingerprint``), the
catalog (dataset fingerprint) and the LLM run's trained weights (a hash of their content, so a
run copied or checked out elsewhere keeps its fusion and a retrained one does not).
``load_fusion`` refuses, in one line, a fusion used with another CF model (a copy of the same
model under another path is fine), another catalog, other LLM weights, other features, or a
model file that does not match its record.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import torch

from tca4rec.cf import load_cf_run
from tca4rec.cf.run import cf_fingerprint
from tca4rec.errors import ConfigError, RunError, TCA4RecError
from tca4rec.fuse.config import FUSION_DIR, FusionConfig
from tca4rec.fuse.features import FEATURE_NAMES, TitleTable, candidates_in_chunks
from tca4rec.io import atomic_write_json, atomic_write_text, file_sha256
from tca4rec.llm.decoding import choose_items
from tca4rec.validate import loads_json

FORMAT = "tca4rec.fusion/1"
MODEL_FILE = "model.txt"
RECORD_FILE = "fusion.json"
RECORD_KEYS = ("format", "features", "config", "cf_run", "cf_fingerprint", "dataset_fingerprint", "weights_sha256",
               "model_sha256")
WEIGHTS = ("adapter/adapter_model.safetensors", "projector.safetensors")  # what an LLM run trained


@dataclass
class Fusion:
    """A fitted learned fusion, ready to re-rank a run's beams: the ranker, its record (``fusion.json``),
    the catalog's titles, and the CF model of its candidates."""

    booster: lgb.Booster
    record: dict
    dataset: object  # RecDataset
    table: TitleTable
    cf_model: torch.nn.Module

    @property
    def config(self) -> FusionConfig:
        return FusionConfig(**self.record["config"])

    @property
    def beams(self) -> int:
        return self.config.beams

    def describe(self) -> dict:
        """What a fused metrics record says about the fusion behind it."""
        keys = ("cf_run", "cf_fingerprint", "model_sha256", "settings", "fit_rows")
        return {"method": "learned fusion", **{key: self.record.get(key) for key in keys}}

    def rerank(self, users: np.ndarray, histories: np.ndarray, llm_items: np.ndarray, llm_scores: np.ndarray,
               length: int) -> tuple[np.ndarray, np.ndarray]:
        """The fused top ``length`` of R rows from their plain beams (item ids [R, B], 0 = none, and
        scores [R, B]): (item ids int64 [R, length], 0 = none; ranker scores float64, -inf = none).
        A title names the item this fusion's CF model scores highest (``llm.decoding.choose_items``)."""
        items = np.zeros((len(users), length), dtype=np.int64)
        scores = np.full((len(users), length), -np.inf)
        for part, logits, cands in candidates_in_chunks(self.table, self.cf_model, users, histories, llm_items,
                                                        llm_scores, self.config.k):
            titles, scores[part] = cands.top(self.booster.predict(cands.features, num_threads=1), length)
            items[part] = choose_items(self.dataset, self.table.items(titles), logits)
        return items, scores


def weights_files(run_dir: Path) -> list[Path]:
    """The files of an LLM run's trained weights (adapter, llara projector) that exist."""
    return [run_dir / name for name in WEIGHTS if (run_dir / name).is_file()]


def weights_fingerprint(run_dir: Path) -> str:
    """A hash of an LLM run's trained weights, by content."""
    files = weights_files(run_dir)
    if not files:
        raise RunError(f"{run_dir} has no trained weights ({WEIGHTS[0]}) to tie a learned fusion to")
    identity = "\x00".join(f"{path.relative_to(run_dir)}={file_sha256(path)}" for path in files)
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def save_fusion(run_dir: Path, booster: lgb.Booster, record: dict) -> dict:
    """Write ``RUN/fusion/`` (the model text first, then the record naming its hash); returns the record."""
    text = booster.model_to_string()
    record = {"format": FORMAT, **record, "model_file": MODEL_FILE,
              "model_sha256": hashlib.sha256(text.encode()).hexdigest()}
    atomic_write_text(run_dir / FUSION_DIR / MODEL_FILE, text)
    atomic_write_json(run_dir / FUSION_DIR / RECORD_FILE, record)
    return record


def read_fusion_record(run_dir: Path) -> dict:
    """``RUN/fusion/fusion.json``; RunError if it is missing or is not a fusion record."""
    path = run_dir / FUSION_DIR / RECORD_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} has no learned fusion ({path} is missing): fit one with "
                       f"`tca4rec fuse fit --run {run_dir}`")
    try:
        record = loads_json(path.read_text(encoding="utf-8"))
        missing = [key for key in RECORD_KEYS if key not in record]
        if record.get("format") != FORMAT or missing:
            raise ValueError(f"format {record.get('format')!r}, missing {', '.join(missing) or 'nothing'}")
        FusionConfig(**record["config"])
    except (ValueError, TypeError, AttributeError) as e:  # ConfigError is a ValueError
        raise RunError(f"{path} is not a learned-fusion record ({str(e).removeprefix('--')})") from None
    return record


def fusion_matches(run_dir: Path, cf_run: str | Path, config: FusionConfig) -> bool:
    """Whether ``run_dir`` holds a fusion fit with ``config`` and this CF model (by content)."""
    try:
        record = read_fusion_record(run_dir)
        return record["config"] == dataclasses.asdict(config) and record["cf_fingerprint"] == cf_fingerprint(cf_run)
    except TCA4RecError:
        return False


def load_fusion(run_dir: Path, signals, cf_run: str | Path | None = None) -> Fusion:
    """The fusion of ``run_dir`` for its ``signals`` (``llm.run.Signals``) with ``cf_run`` (default:
    the CF run it was fit with), refused in one line if it belongs to another model, catalog or run."""
    record = read_fusion_record(run_dir)
    where = run_dir / FUSION_DIR
    if record["features"] != list(FEATURE_NAMES):
        raise RunError(f"{where} was fit with other features ({len(record['features'])}; this version has "
                       f"{len(FEATURE_NAMES)}): fit it again with `tca4rec fuse fit`")
    dataset = signals.dataset
    if record["dataset_fingerprint"] != dataset.fingerprint():
        raise RunError(f"{where} was fit on another catalog (fingerprint {record['dataset_fingerprint']}), not "
                       f"{dataset.root} ({dataset.fingerprint()})")
    if record["weights_sha256"] != weights_fingerprint(run_dir):
        raise RunError(f"{where} was fit on other weights of the LLM run (retrained since?): fit it again")
    cf_run = Path(cf_run if cf_run is not None else record["cf_run"])
    if not cf_run.is_dir():
        raise RunError(f"{where}: its CF run {cf_run} does not exist here: name it with --cf-run")
    if cf_fingerprint(cf_run) != record["cf_fingerprint"]:
        raise ConfigError(f"{where} was fit with another CF model than {cf_run} (--cf-run {record['cf_run']} then): "
                          "fit the fusion again with this one")
    data = (where / MODEL_FILE).read_bytes() if (where / MODEL_FILE).is_file() else b""
    if hashlib.sha256(data).hexdigest() != record["model_sha256"]:  # so a damaged file is never parsed
        raise RunError(f"{where / MODEL_FILE} is missing or is not the model {RECORD_FILE} describes: fit it again")
    return Fusion(lgb.Booster(model_str=data.decode("utf-8")), record, dataset,
                  TitleTable.of(dataset, signals.trie.lengths.numpy()), load_cf_run(cf_run, dataset))
