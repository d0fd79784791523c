"""Re-rank a split's plain decoding with the run's learned fusion: ``metrics_<split>_fusion.json``.

The fusion needs only what plain decoding wrote (``predictions_<split>.jsonl``: each row's
beams and their scores) and one CF pass, so ``fuse_predictions`` applies it to decodings that
already exist, committed ones included, in seconds. ``evaluate_fused`` is ``evaluate --fusion``:
the ordinary resumable plain evaluation (its files are written as always), then that.

The fused files sit beside the plain ones in the same layout (``metrics_record``,
``prediction_records``): the ranked list holds the ``beams`` best candidates, a title names
the item the fusion's CF model scores highest, the scores are the ranker's, and the record's
``fusion`` field names the fusion (its CF run, model hash, settings and fitting rows).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tca4rec.errors import ConfigError, RunError
from tca4rec.evaluate.metrics import hit_ranks, metrics_record, prediction_records
from tca4rec.fuse.config import FUSION_SUFFIX, FusionConfig
from tca4rec.fuse.store import Fusion, fusion_matches, load_fusion, read_fusion_record
from tca4rec.io import atomic_write_json, atomic_write_jsonl
from tca4rec.llm.evaluate import ITEM_CHOICE, evaluate_llm_run
from tca4rec.llm.run import load_run_signals, process_state
from tca4rec.validate import is_int, loads_json, read_jsonl, read_text

# Fields of a plain metrics record that describe its results, not its rows and run: not copied.
RESULT_FIELDS = ("model", "split", "rows", "metrics", "ci95")


def read_beams(run_dir: Path, split: str, dataset) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """The plain decoding of ``split`` in ``run_dir``: its metrics record, and from its predictions
    the row numbers int64 [R], the beams' item ids int64 [R, B] and their scores float64 [R, B].

    Every line is checked against ``dataset`` (a row of the split, items of the catalog, a finite
    score for each item; id 0, an empty slot, may score -inf), so a damaged file is an error that
    names its line and field, never a wrong re-ranking."""
    metrics, predictions = run_dir / f"metrics_{split}.json", run_dir / f"predictions_{split}.jsonl"
    try:
        record = loads_json(read_text(metrics))
        lines = read_jsonl(predictions)
    except FileNotFoundError as e:
        raise RunError(f"{e.filename} is missing: decode the {split} rows first "
                       f"(`tca4rec evaluate --run {run_dir} --split {split}`)") from None
    except ValueError as e:
        raise RunError(f"{metrics} is not a metrics record ({e})") from None
    num_rows, num_items = len(dataset.split(split)), dataset.num_items
    rows, items, scores = [], [], []
    line_of: dict[int, int] = {}
    for number, obj in lines:
        row, beam_items, beam_scores = _beams_of(obj, f"{predictions}, line {number}", num_rows, num_items)
        if items and len(beam_items) != len(items[0]):
            raise RunError(f"{predictions}, line {number}: {len(beam_items)} items; line {lines[0][0]} has "
                           f"{len(items[0])}")
        if row in line_of:  # counted twice, it would weigh twice in the fused metrics
            raise RunError(f"{predictions}, line {number}: row {row} again (line {line_of[row]} has it)")
        line_of[row] = number
        rows.append(row)
        items.append(beam_items)
        scores.append(beam_scores)
    if not rows:
        raise RunError(f"{predictions} holds no rows: decode the {split} rows again")
    return (record, np.array(rows, dtype=np.int64), np.array(items, dtype=np.int64),
            np.array(scores, dtype=np.float64))


def _beams_of(obj: dict, where: str, num_rows: int, num_items: int) -> tuple[int, list[int], list[float]]:
    try:
        row, beam_items, beam_scores = obj["row"], obj["items"], obj["scores"]
    except KeyError:
        raise RunError(f"{where} is not a prediction record of a plain decoding (row, items, scores)") from None
    if not is_int(row) or not 0 <= row < num_rows:
        raise RunError(f"{where}: row {row!r} is not a row of the split (0..{num_rows - 1})")
    if not isinstance(beam_items, list) or not isinstance(beam_scores, list) or not beam_items \
            or len(beam_items) != len(beam_scores):
        raise RunError(f"{where}: items and scores must be lists of the same, non-zero length")
    for item, score in zip(beam_items, beam_scores):
        if not is_int(item) or not 0 <= item <= num_items:
            raise RunError(f"{where}: item {item!r} is not an item of the catalog (1..{num_items}, 0 for none)")
        if not isinstance(score, (int, float)) or isinstance(score, bool) or math.isnan(score) \
                or (item > 0 and not math.isfinite(score)):
            raise RunError(f"{where}: score {score!r} of item {item} is not a finite number")
    return row, beam_items, beam_scores


def fuse_predictions(run_dir: str | Path, split: str = "test", cf_run: str | Path | None = None,
                     data: str | Path | None = None) -> dict:
    """Re-rank the plain ``predictions_<split>.jsonl`` of ``run_dir`` with its learned fusion (``cf_run``:
    its CF run, by default the one it was fit with); writes and returns ``metrics_<split>_fusion.json``."""
    run_dir = Path(run_dir)
    _, _, signals = load_run_signals(run_dir, data)
    return _fuse(run_dir, split, load_fusion(run_dir, signals, cf_run))


def evaluate_fused(run_dir: str | Path, split: str = "test", limit: int | None = None, beams: int = 10,
                   batch_size: int = 8, data: str | Path | None = None, cf_run: str | Path | None = None,
                   sample_seed: int | None = None, sample_exclude: tuple[tuple[int, int], ...] = ()) -> dict:
    """``evaluate_llm_run`` (plain decoding, resumable; its own files written) then ``fuse_predictions``.
    The fusion is checked before anything is decoded; ``beams`` must be the ones it was fit on."""
    run_dir = Path(run_dir)
    _, _, signals = load_run_signals(run_dir, data)
    fusion = load_fusion(run_dir, signals, cf_run)
    if beams != fusion.beams:
        raise ConfigError(f"--beams {beams}: the learned fusion of {run_dir} was fit on {fusion.beams} beams")
    evaluate_llm_run(run_dir, split=split, limit=limit, beams=beams, batch_size=batch_size, data=data,
                     sample_seed=sample_seed, sample_exclude=sample_exclude)
    return _fuse(run_dir, split, fusion)


def fused_with(run_dir: Path, split: str, cf_run: str | Path, config: FusionConfig) -> bool:
    """Whether ``metrics_<split>_fusion.json`` of ``run_dir`` comes from its current fusion, fit with
    ``config`` and this CF model (what a study reuses)."""
    if not fusion_matches(run_dir, cf_run, config):
        return False
    try:
        metrics = loads_json((run_dir / f"metrics_{split}{FUSION_SUFFIX}.json").read_text(encoding="utf-8"))
        return metrics["fusion"]["model_sha256"] == read_fusion_record(run_dir)["model_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _fuse(run_dir: Path, split: str, fusion: Fusion) -> dict:
    plain, rows, items, scores = read_beams(run_dir, split, fusion.dataset)
    if items.shape[1] != fusion.beams:
        raise ConfigError(f"{run_dir}/predictions_{split}.jsonl holds {items.shape[1]} beams, the fusion was fit on "
                          f"{fusion.beams}: decode the rows again with --beams {fusion.beams}")
    dataset = fusion.dataset
    rows_of = dataset.split(split)
    users, targets = rows_of.users[rows], rows_of.targets[rows]
    fused, fused_scores = fusion.rerank(users, rows_of.histories[rows], items, scores, fusion.beams)
    ranks = hit_ranks(fused, targets, dataset.title_group)
    extra = {key: value for key, value in plain.items() if key not in RESULT_FIELDS}
    record = metrics_record(ranks, split=split, model=f"{plain.get('model', run_dir.name)}+fusion", extra={
        **extra, "beta": 0.0, "guide_cf": None, "cf_lookahead": None,
        "length_normalize": False, "item_choice": ITEM_CHOICE, "fusion": fusion.describe()})
    state = process_state()
    if state.is_main_process:
        atomic_write_json(run_dir / f"metrics_{split}{FUSION_SUFFIX}.json", record)
        atomic_write_jsonl(run_dir / f"predictions_{split}{FUSION_SUFFIX}.jsonl", prediction_records(
            dataset.titles, rows, users, targets, ranks, fused, fused_scores))
    state.wait_for_everyone()
    return record
