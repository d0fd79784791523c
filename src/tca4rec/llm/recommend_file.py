"""Offline batch scoring: the top-k items of every user of a histories file, as JSON lines.

``tca4rec recommend --run RUN --histories FILE --out recs.jsonl``. The input format and its
checks are ``tca4rec.llm.histories``, plus one that needs the loaded model: a history whose
prompt does not fit the model's context is a bad row too, found before anything is decoded.
Decoding is ``Recommender`` (the same answers as ``recommend`` and the HTTP service). The
output has one line per good input row, in input order: ``{"row", "user", "items",
"titles", "scores"}``.

Resumable: decoded rows are appended one batch at a time as whole lines, flushed and
fsync'd. A run started again with the same settings (recorded beside the output in
``OUT.meta.json``) keeps the complete lines, drops a trailing partial line (a kill in the
middle of a write) and decodes only the rows after them; a run with other settings or
another input file is refused instead of being mixed into the file. The record names the
input, run, catalog and CF run by their content, so moving or copying them still resumes. Both output paths go
through ``tca4rec.io.check_output`` before anything loads: an existing ``--out`` needs its
settings record, an existing ``--skip-bad-rows`` file must be a bad-row list; a person's file
in either place is refused, never overwritten. Under ``torchrun`` /
``accelerate launch`` each batch's rows are split across the processes, as evaluation
does, and rank 0 writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from tca4rec.align.guidance import DEFAULT_CF_LOOKAHEAD
from tca4rec.cf.run import cf_fingerprint
from tca4rec.data import load_dataset
from tca4rec.errors import ConfigError, DatasetError
from tca4rec.io import atomic_write_json, atomic_write_jsonl, check_output, exclusive_use, file_sha256, jsonl_records
from tca4rec.llm.decoding import read_tuned_beta
from tca4rec.llm.histories import BAD_ROW_FIELDS, BadRow, HistoryRow, read_histories
from tca4rec.llm.recommend import Catalog, InputError, Recommendation, Recommender
from tca4rec.llm.run import LLMRun, load_llm_run, process_state, read_run_record, weights_stamp
from tca4rec.validate import loads_json


def recommend_file(run_dir: str | Path, histories: str | Path, out: str | Path, *, k: int = 10,
                   beams: int | None = None, beta: float | str = 0.0, cf_run: str | Path | None = None,
                   batch_size: int = 8, skip_bad_rows: str | Path | None = None, data: str | Path | None = None,
                   length_normalize: bool = False, cf_lookahead: str = DEFAULT_CF_LOOKAHEAD,
                   recommender: Callable[[LLMRun], Recommender] | None = None) -> dict:
    """Write the top ``k`` of every row of ``histories`` to ``out`` (resuming a killed run); returns a summary.

    ``skip_bad_rows``: a file to list bad input rows in (JSON lines: row, field, error) instead
    of stopping at the first. ``beams`` defaults to max(k, 10). ``recommender``: builds the
    ``Recommender`` from the loaded run instead of the decoding options (the learned fusion's,
    ``tca4rec.fuse.recommend``); its ``resume_key`` joins the settings a resumed file must share.
    """
    beams = max(k, 10) if beams is None else beams
    if k < 1 or beams < k:
        raise ConfigError(f"--k {k}: must be in 1..--beams ({beams})")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be >= 1")
    out, histories = Path(out), Path(histories)
    meta = out.with_name(out.name + ".meta.json")
    check_output(out, "--out", lambda path: path.is_file() and meta.is_file())
    if skip_bad_rows is not None:
        if Path(skip_bad_rows).resolve() in (out.resolve(), meta.resolve(), histories.resolve()):
            raise ConfigError(f"--skip-bad-rows {skip_bad_rows}: the same file as --out, its record or --histories")
        check_output(skip_bad_rows, "--skip-bad-rows", jsonl_records(BAD_ROW_FIELDS))
    if beta == "auto":
        beta = read_tuned_beta(Path(run_dir), cf_run, cf_lookahead)  # before the slow load: fails fast
    state = process_state()
    # The input is checked against the run's catalog before the (slow) model load: a bad row fails fast.
    dataset = load_dataset(data if data is not None else read_run_record(Path(run_dir))["config"]["data"])
    rows, bad = read_histories(histories, Catalog(dataset.titles), int(dataset.split("train").histories.shape[1]),
                               skip_bad=skip_bad_rows is not None)
    with exclusive_use(out, "recommend"):
        run = load_llm_run(run_dir, data=data, device=state.device)
        ranker = recommender(run) if recommender is not None else Recommender(
            run, beams=beams, beta=beta, cf_run=cf_run, length_normalize=length_normalize, cf_lookahead=cf_lookahead)
        ranker.check_k(k)
        rows, bad = _fitting(ranker, rows, bad, histories, skip_bad=skip_bad_rows is not None)
        if skip_bad_rows is not None and state.is_main_process:
            atomic_write_jsonl(skip_bad_rows, [b.record() for b in bad])
        # What the lists depend on, by content: moving or copying the input, the run or the CF run
        # resumes; changing any of them is refused.
        key = {"histories_sha256": file_sha256(histories),
               "run_config_sha256": file_sha256(run.run_dir / "config.json"), "weights": weights_stamp(run.run_dir),
               "dataset_fingerprint": run.dataset.fingerprint(), "k": k,
               "beams": ranker.beams, "beta": ranker.beta, "cf_run": None if cf_run is None else cf_fingerprint(cf_run),
               "length_normalize": length_normalize, "cf_lookahead": cf_lookahead,
               "skip_bad_rows": skip_bad_rows is not None, **ranker.resume_key()}
        done, keep_bytes = _resume(out, meta, key, rows)
        if state.is_main_process:
            if done == 0:
                atomic_write_json(meta, key)
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("ab") as f:
                f.truncate(keep_bytes)  # a partial last line from a kill goes; complete lines stay
        state.wait_for_everyone()
        block = batch_size * state.num_processes  # one batch per process per block
        with tqdm(total=len(rows), initial=done, unit="row", desc="recommend",
                  disable=not state.is_main_process) as bar:
            for start in range(done, len(rows), block):
                chunk = rows[start:start + block]
                ranked = ranker.decode([row.items for row in chunk], k=k, beta=ranker.beta, batch_size=batch_size)
                if state.is_main_process:
                    _append(out, [_line(row, recs) for row, recs in zip(chunk, ranked)])
                bar.update(len(chunk))
    state.wait_for_everyone()
    return {"out": str(out), "rows": len(rows), "decoded": len(rows) - done, "resumed_after": done,
            "bad_rows": len(bad), "bad_rows_file": None if skip_bad_rows is None else str(skip_bad_rows)}


def _fitting(ranker: Recommender, rows: list[HistoryRow], bad: list[BadRow], path: str | Path,
             skip_bad: bool) -> tuple[list[HistoryRow], list[BadRow]]:
    """The rows whose prompt fits the model's context (known only once the model is loaded); one that
    does not is a bad row like the others: named at once, or with ``skip_bad`` listed and left out."""
    kept = []
    for row in rows:
        try:
            ranker.check_fits(row.items)
        except InputError as e:
            message = str(e).removeprefix("history ")
            if not skip_bad:
                raise DatasetError(message, file=path, row=row.row, field="history") from None
            bad.append(BadRow(row.row, "history", message))
            continue
        kept.append(row)
    return kept, sorted(bad, key=lambda b: b.row)


def _line(row: HistoryRow, recs: list[Recommendation]) -> bytes:
    record = {"row": row.row, "user": row.user, "items": [r.item_id for r in recs],
              "titles": [r.title for r in recs], "scores": [r.score for r in recs]}
    return (json.dumps(record) + "\n").encode("utf-8")


def _append(path: Path, lines: list[bytes]) -> None:
    """Whole lines at the end of ``path``, on disk before this returns."""
    with path.open("ab") as f:
        f.write(b"".join(lines))
        f.flush()
        os.fsync(f.fileno())


def _resume(out: Path, meta: Path, key: dict, rows: list[HistoryRow]) -> tuple[int, int]:
    """(rows already written, bytes of their complete lines) of an earlier run with the same ``key``."""
    if not out.exists():
        return 0, 0
    try:
        saved = loads_json(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError(f"{out} exists but {meta} does not describe it (not written by this command?): "
                          "remove it or choose another --out") from None
    if saved != key:
        changed = sorted(name for name in key if saved.get(name) != key[name]) if isinstance(saved, dict) else ["all"]
        raise ConfigError(f"{out} was started with another {', '.join(changed)}: remove it and {meta.name} to "
                          "start again, or choose another --out")
    text = out.read_bytes()
    keep = text.rfind(b"\n") + 1
    lines = text[:keep].splitlines()
    if len(lines) > len(rows):
        raise ConfigError(f"{out} has {len(lines)} lines, more than the {len(rows)} input rows")
    for number, (line, row) in enumerate(zip(lines, rows), start=1):
        try:
            written = loads_json(line).get("row")
        except (ValueError, AttributeError):
            written = None
        if written != row.row:
            raise ConfigError(f"{out} line {number} is not the result of input row {row.row}: remove it to start again")
    return len(lines), keep
