"""Choose the CF weight beta of CF-guided decoding on valid rows (never on test).

Every beta of a grid decodes the same first ``rows`` rows of the split with the same run
and CF model; the best by NDCG@10 (ties: the smallest beta, the closer to plain decoding)
is stored in the run folder with the whole table, so that ``--beta auto`` in evaluate and
recommend reads it. Beside it go the rankings behind the table (every beta's, and the CF
model's alone on the same rows: ``cf_alone``), so that every figure of it can be recomputed. A beta is tied to the lookahead it was tuned with (the CF term's scale
against the LLM's differs between them): each lookahead has its own file
(``llm.decoding.tuned_beta_file``) and record field ``cf_lookahead``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tca4rec.align.guidance import DEFAULT_CF_LOOKAHEAD, check_lookahead
from tca4rec.cf.run import cf_fingerprint, topk
from tca4rec.errors import ConfigError
from tca4rec.evaluate.metrics import KS, hit_ranks, prediction_records, summarize
from tca4rec.io import atomic_write_json, atomic_write_jsonl
from tca4rec.llm.config import DEFAULT_GRID
from tca4rec.llm.decoding import TEACHER, evaluate_rows, guide_cf_model, parse_beta, tuned_beta_file
from tca4rec.llm.run import load_llm_run, process_state

SELECTION_METRIC = "NDCG@10"


def tuning_predictions_file(tuning_file: Path, split: str) -> Path:
    """Where the rows behind a tuning table are kept (``predictions_valid_beta_tuning_max.jsonl``):
    every beta's ranking of every row (``beta`` on each record), and the CF model's own (``beta``
    null), so the table can be recomputed."""
    return tuning_file.with_name(f"predictions_{split}_{tuning_file.stem}.jsonl")


def tune_beta(run_dir: str | Path, split: str = "valid", rows: int = 100, grid: Sequence[float] = DEFAULT_GRID,
              cf_run: str | Path | None = None, beams: int = 10, batch_size: int = 8,
              data: str | Path | None = None, cf_lookahead: str = DEFAULT_CF_LOOKAHEAD) -> dict:
    """Evaluate every beta of ``grid`` on the first ``rows`` rows of ``split``; store and return the table."""
    if split != "valid":  # train rows taught the CF teacher its answers: a beta chosen there trusts it too much
        raise ConfigError(f"--split {split}: beta is chosen on valid rows, never on the test rows it is reported "
                          "on nor on the train rows the CF model learned")
    if rows < 1 or beams < 1 or batch_size < 1:
        raise ConfigError("--rows, --beams and --batch-size must be >= 1")
    check_lookahead(cf_lookahead)
    betas = sorted({parse_beta(b, auto_too=False) for b in grid})
    if not betas:
        raise ConfigError("--grid is empty")
    state = process_state()
    run = load_llm_run(run_dir, data=data, device=state.device)
    cf_model = guide_cf_model(run, cf_run)
    if cf_model is None:
        raise ConfigError(f"{run_dir} has no CF teacher to guide decoding: name a CF run with --cf-run")
    split_rows = run.dataset.split(split).head(rows)
    table, predictions = [], []
    titles, group = run.dataset.titles, run.dataset.title_group
    for beta in betas:
        items, scores = evaluate_rows(run.host, run.signals, split_rows, beams=beams, k=beams, batch_size=batch_size,
                                      device=state.device, desc=f"beta {beta:g}", beta=beta, cf_model=cf_model,
                                      cf_lookahead=cf_lookahead)
        ranks = hit_ranks(np.pad(items, ((0, 0), (0, max(0, max(KS) - beams)))), split_rows.targets, group)
        table.append({"beta": beta, **summarize(ranks)})
        predictions += [{"beta": beta, **p} for p in prediction_records(
            titles, split_rows.row_ids, split_rows.users, split_rows.targets, ranks, items, scores)]
    # The CF model alone on the same rows: the line the table is read against.
    items, scores = topk(cf_model, split_rows.users, split_rows.histories, k=min(max(KS), cf_model.num_items))
    ranks = hit_ranks(items, split_rows.targets, group)
    predictions += [{"beta": None, **p} for p in prediction_records(
        titles, split_rows.row_ids, split_rows.users, split_rows.targets, ranks, items, scores)]
    best = max(table, key=lambda row: (row[SELECTION_METRIC], -row["beta"]))  # ties: the smallest beta
    path = run.run_dir / tuned_beta_file(cf_lookahead)
    record = {"run": run.run_dir.name, "split": split, "rows": len(split_rows), "beams": beams,
              "cf_run": str(cf_run) if cf_run is not None else TEACHER,
              "cf_fingerprint": cf_fingerprint(cf_run) if cf_run is not None else None, "cf_lookahead": cf_lookahead,
              "metric": SELECTION_METRIC,
              "best_beta": best["beta"], "table": table, "cf_alone": summarize(ranks),
              "predictions": tuning_predictions_file(path, split).name}
    if state.is_main_process:
        atomic_write_jsonl(tuning_predictions_file(path, split), predictions)
        atomic_write_json(path, record)
    state.wait_for_everyone()
    return record
