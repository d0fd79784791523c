"""Evaluate an LLM run: trie-constrained beam search over a split, then HR/NDCG@1,3,5,10.

The ranked list of a row is its top beams (item ids = trie column + 1; a title several items
share names the one its CF model, or train popularity, ranks first: ``item_choice``); a hit
is the target or an item with the identical title, exactly as for CF runs, and the results
use the same ``metrics_<split>.json`` layout (``metrics_record``). Under ``torchrun`` /
``accelerate launch`` the rows are sharded across processes and gathered in order; rank 0
writes the files.

CF-guided decoding (``beta > 0``, DESIGN.md) writes ``metrics_<split>_beta<b>.json`` (then
``_max`` with the max lookahead, ``_lennorm`` with length normalization) beside the plain
results, so all stay comparable.
``beta="auto"`` uses the value ``tca4rec tune-beta`` stored in the run folder (chosen on
valid rows, never on test).

Decoding thousands of rows takes an hour on a CPU, so rows go in blocks and what is decoded
is saved after each block (``decode_<split><suffix>.partial.json``, atomic): a killed
evaluation started again with the same settings on the same weights decodes only the rest,
and gives the same results as an uninterrupted one (tested). The file goes once the
metrics are written. One process at a time decodes a run's split and variant (``io.exclusive_use``):
two would decode the same rows and overwrite each other's partial file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tca4rec.align.guidance import DEFAULT_CF_LOOKAHEAD, check_lookahead
from tca4rec.errors import ConfigError
from tca4rec.evaluate.metrics import KS, exclude_record, hit_ranks, metrics_record, prediction_records
from tca4rec.io import atomic_write_json, atomic_write_jsonl, atomic_write_text, exclusive_use
from tca4rec.llm.decoding import TEACHER, evaluate_rows, guide_cf_model, parse_beta, read_tuned_beta
from tca4rec.llm.run import load_llm_run, process_state, weights_stamp
from tca4rec.validate import loads_json

BLOCK_BATCHES = 8  # decoded rows are saved after every BLOCK_BATCHES batches (per process)
# Which item a title shared by several items names (llm.decoding.choose_items), as metrics record it.
ITEM_CHOICE = "cf"  # the ranking's CF model (the guide, else the teacher) scores it highest
POPULARITY_CHOICE = "popularity"  # no CF model: the most popular in the train rows


def decoding_suffix(beta: float, length_normalize: bool, cf_lookahead: str = DEFAULT_CF_LOOKAHEAD) -> str:
    """File-name suffix of a decoding variant: '' for plain decoding, e.g. '_beta0.5_lennorm' or
    '_beta2_max' (the sum lookahead, the first one, keeps the names it always had)."""
    guided = (f"_beta{beta:g}" + ("_max" if cf_lookahead == "max" else "")) if beta > 0 else ""
    return guided + ("_lennorm" if length_normalize else "")


def evaluate_llm_run(run_dir: str | Path, split: str = "test", limit: int | None = None, beams: int = 10,
                     batch_size: int = 8, data: str | Path | None = None, beta: float | str = 0.0,
                     cf_run: str | Path | None = None, length_normalize: bool = False,
                     sample_seed: int | None = None, sample_exclude: tuple[tuple[int, int], ...] = (),
                     cf_lookahead: str = DEFAULT_CF_LOOKAHEAD) -> dict:
    """Evaluate a finished run on ``split``; writes ``metrics_<split>.json`` and ``predictions_<split>.jsonl``
    (with the suffix of ``decoding_suffix`` for CF-guided or length-normalized decoding).

    The ranked list holds the ``beams`` best items, so metrics at K > beams count only
    those (with the default 10 beams every reported K is complete). ``beta``: CF weight of
    CF-guided decoding, or "auto" for the tuned one; ``cf_run``: the CF run whose logits
    guide (default: the run's own teacher); ``cf_lookahead``: how a partial beam's CF part is
    scored ("sum" or "max", see ``decode.BeamSearchConfig``). ``limit`` rows: the first ones, or a seeded random
    sample when ``sample_seed`` is given (without the rows of the earlier samples
    ``sample_exclude``, pairs of (limit, seed)).
    """
    if beams < 1:
        raise ConfigError(f"--beams {beams}: must be >= 1")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: must be >= 1")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be >= 1")
    check_lookahead(cf_lookahead)
    beta = read_tuned_beta(Path(run_dir), cf_run, cf_lookahead) if beta == "auto" else parse_beta(beta)
    suffix = decoding_suffix(beta, length_normalize, cf_lookahead)
    state = process_state()
    with exclusive_use(run_dir, f"evaluate {split}{suffix}"):
        run = load_llm_run(run_dir, data=data, device=state.device)
        cf_model = guide_cf_model(run, cf_run) if beta > 0 else None
        rows = run.dataset.split(split).select(limit, sample_seed, sample_exclude)
        partial = run.run_dir / f"decode_{split}{suffix}.partial.json"
        key = {"rows": rows.row_ids.tolist(), "beams": beams, "batch_size": batch_size, "beta": beta,
               "cf_run": str(cf_run) if cf_run is not None else None, "processes": state.num_processes,
               "weights": weights_stamp(run.run_dir), "item_choice": ITEM_CHOICE}
        items, scores = _read_partial(partial, key)
        block = batch_size * BLOCK_BATCHES * state.num_processes
        what = f"evaluate {run.run_dir.name} on {split}" + (f" (CF-guided, β={beta:g})" if beta > 0 else "")
        with tqdm(total=len(rows), initial=len(items), desc=what, unit="row", dynamic_ncols=True,
                  disable=not state.is_local_main_process) as bar:
            for start in range(len(items), len(rows), block):
                new_items, new_scores = evaluate_rows(
                    run.host, run.signals, rows.rows_between(start, start + block), beams=beams, k=beams,
                    batch_size=batch_size, device=state.device, beta=beta, length_normalize=length_normalize,
                    cf_model=cf_model, cf_lookahead=cf_lookahead, progress=bar)
                items, scores = np.concatenate([items, new_items]), np.concatenate([scores, new_scores])
                if state.is_main_process and len(items) < len(rows):
                    atomic_write_text(partial, json.dumps({"key": key, "items": items.tolist(),
                                                           "scores": scores.tolist()}))
        ranked = np.pad(items, ((0, 0), (0, max(0, max(KS) - beams))))  # empty slots never hit
        ranks = hit_ranks(ranked, rows.targets, run.dataset.title_group)
        lookahead = "" if cf_lookahead == "sum" else f",{cf_lookahead}"
        name = (run.name + (f"+cfdec(beta={beta:g}{lookahead})" if beta > 0 else "")
                + ("+lennorm" if length_normalize else ""))
        record = metrics_record(ranks, split=split, model=name, extra={
            "dataset": run.dataset.name, "limit": limit, "sample_seed": sample_seed,
            **exclude_record(sample_exclude), "run": run.run_dir.name, "beams": beams,
            "host": run.config.host, "alpha": run.config.alpha, "cf": run.config.cf, "beta": beta,
            "guide_cf": (str(cf_run) if cf_run is not None else TEACHER) if beta > 0 else None,
            "cf_lookahead": cf_lookahead if beta > 0 else None,
            "length_normalize": length_normalize,
            "item_choice": ITEM_CHOICE if beta > 0 or run.config.cf is not None else POPULARITY_CHOICE})
        if state.is_main_process:
            atomic_write_json(run.run_dir / f"metrics_{split}{suffix}.json", record)
            atomic_write_jsonl(run.run_dir / f"predictions_{split}{suffix}.jsonl", prediction_records(
                run.dataset.titles, rows.row_ids, rows.users, rows.targets, ranks, items, scores))
            partial.unlink(missing_ok=True)
    state.wait_for_everyone()
    return record


def _read_partial(path: Path, key: dict) -> tuple[np.ndarray, np.ndarray]:
    """(items, scores) of the rows a killed evaluation with the same ``key`` decoded; empty otherwise."""
    beams = key["beams"]
    empty = np.zeros((0, beams), dtype=np.int64), np.zeros((0, beams), dtype=np.float32)
    try:
        saved = loads_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none, or unreadable: decode from the start
        return empty
    if not isinstance(saved, dict) or saved.get("key") != key:
        return empty
    items = np.asarray(saved["items"], dtype=np.int64).reshape(-1, beams)
    return items, np.asarray(saved["scores"], dtype=np.float32).reshape(-1, beams)
