"""``tca4rec fuse fit``: decode valid rows with the LLM, add the CF model's candidates, fit the fusion.

Honest protocol: the ranker is fit, and its settings chosen, on the first ``rows`` valid
rows only; test rows are never seen before the fused evaluation. The LLM's decoding of those
rows is the ordinary plain evaluation (``evaluate_llm_run(split="valid", limit=rows)``):
resumable after a kill, and its ``predictions_valid.jsonl`` is the data behind the fit (commit
it with the fusion). A plain decoding of the same rows and beams already there, newer than the
run's weights, is reused instead of decoded again.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import lightgbm as lgb

from tca4rec.cf import load_cf_run
from tca4rec.cf.run import cf_fingerprint
from tca4rec.errors import ConfigError, RunError
from tca4rec.fuse.apply import read_beams
from tca4rec.fuse.config import FusionConfig
from tca4rec.fuse.features import FEATURE_NAMES, Candidates, TitleTable, candidates_in_chunks
from tca4rec.fuse.ranker import fit_ranker
from tca4rec.fuse.store import save_fusion, weights_files, weights_fingerprint
from tca4rec.llm.evaluate import evaluate_llm_run
from tca4rec.llm.run import load_run_signals
from tca4rec.validate import loads_json


def fit_fusion(run_dir: str | Path, cf_run: str | Path | None = None, config: FusionConfig = FusionConfig(), *,
               batch_size: int = 8, data: str | Path | None = None) -> dict:
    """Fit the learned fusion of ``run_dir`` with ``cf_run`` (default: the run's teacher) on the first
    ``config.rows`` valid rows; writes ``RUN/fusion/`` and returns its record (``fusion.json``)."""
    run_dir = Path(run_dir)
    _, run_config, signals = load_run_signals(run_dir, data)
    cf_run = cf_run if cf_run is not None else run_config.cf
    if cf_run is None:
        raise ConfigError(f"{run_dir} has no CF teacher: name the fusion's CF run with --cf-run")
    dataset = signals.dataset
    cf_model = load_cf_run(cf_run, dataset)  # refuses a CF run of another catalog
    weights = weights_fingerprint(run_dir)
    rows = dataset.split("valid").head(config.rows)
    if not _decoded(run_dir, len(rows), config.beams):
        evaluate_llm_run(run_dir, split="valid", limit=config.rows, beams=config.beams, batch_size=batch_size,
                         data=data)
    _, row_ids, items, scores = read_beams(run_dir, "valid", dataset)
    if not (len(row_ids) == len(rows) and (row_ids == rows.row_ids).all()):
        raise RunError(f"{run_dir}/predictions_valid.jsonl does not hold the first {len(rows)} valid rows")
    started = time.perf_counter()
    table = TitleTable.of(dataset, signals.trie.lengths.numpy())
    cands = Candidates.concat([c for *_, c in candidates_in_chunks(
        table, cf_model, rows.users, rows.histories, items, scores, config.k, rows.targets)])
    booster, settings, selection = fit_ranker(cands, config)
    return save_fusion(run_dir, booster, {
        "features": list(FEATURE_NAMES), "config": dataclasses.asdict(config), "settings": settings,
        "split": "valid", "fit_rows": len(rows), "selection": selection,
        "cf_run": str(Path(cf_run).resolve()), "cf_fingerprint": cf_fingerprint(cf_run),
        "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(), "run": run_dir.name,
        "weights_sha256": weights, "lightgbm": lgb.__version__,
        "fit_seconds": round(time.perf_counter() - started, 2)})


def _decoded(run_dir: Path, rows: int, beams: int) -> bool:
    """Whether ``predictions_valid.jsonl`` already holds the plain decoding of the first ``rows`` valid
    rows with ``beams`` beams, written after the run's weights."""
    try:
        record = loads_json((run_dir / "metrics_valid.json").read_text(encoding="utf-8"))
        written = (run_dir / "predictions_valid.jsonl").stat().st_mtime_ns
        trained = max(path.stat().st_mtime_ns for path in weights_files(run_dir))
    except (OSError, ValueError):
        return False
    return (written > trained and record.get("rows") == rows and record.get("sample_seed") is None
            and record.get("beams") == beams and not record.get("beta") and not record.get("length_normalize"))
