"""Evaluate an LLM run: trie-constrained beam search over a split, then HR/NDCG@1,3,5,10.

The ranked list of a row is its top beams (item ids = trie column + 1); a hit is the
target or an item with the identical title, exactly as for CF runs, and the results use
the same ``metrics_<split>.json`` layout (``metrics_record``). Under ``torchrun`` /
``accelerate launch`` the rows are sharded across processes and gathered in order; rank 0
writes the files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tca4rec.errors import ConfigError
from tca4rec.evaluate.metrics import KS, hit_ranks, metrics_record, prediction_records
from tca4rec.io import atomic_write_json, atomic_write_jsonl


def evaluate_rows(host, signals, split, *, beams: int, k: int, batch_size: int, device=None,
                  desc: str = "beam search") -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` items of every row of ``split`` by constrained beam search.

    Returns (item ids int64 [R, k], 0 where fewer than k items were found; scores float32
    [R, k], sums of token log-probs, -inf where empty). Every process of a distributed
    launch must call this; each decodes its share of the rows and all get the full result.
    """
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    from tca4rec.decode import BeamSearchConfig, constrained_beam_search
    from tca4rec.llm.run import process_state

    state = process_state()
    device = torch.device(device if device is not None else next(host.parameters()).device)
    # On a GPU decode in bf16 like training (the Trainer's bf16 autocast); on the CPU in float32.
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    search = BeamSearchConfig(num_beams=beams, top_k=k, masked=host.host_config.masked, tau=host.host_config.softmax_tau)
    users = torch.tensor(split.users)
    histories = torch.tensor(split.histories)
    items = np.zeros((len(split), k), dtype=np.int64)
    scores = np.full((len(split), k), -np.inf, dtype=np.float32)
    was_training = host.training
    host.eval()
    shard: list[tuple[int, list[int], list[float]]] = []
    with state.split_between_processes(list(range(len(split)))) as my_rows:
        batches = range(0, len(my_rows), batch_size)
        for start in tqdm(batches, desc=desc, unit="batch", disable=not state.is_local_main_process):
            rows = torch.tensor(my_rows[start:start + batch_size], dtype=torch.long)
            prompt = host.prompts(histories[rows]).to(device)
            history_cf = user_cf = None
            if host.host_config.uses_cf_embeddings:
                _, history_cf, user_cf = signals.cf_signals(users[rows].to(device), histories[rows].to(device))
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                inputs = host.decode_inputs(prompt, history_cf, user_cf)
                result = constrained_beam_search(host.llm, signals.trie, prompt.attention_mask, config=search,
                                                 **inputs)
            ids = torch.where(result.items >= 0, result.items + 1, 0).cpu()  # column -> item id
            shard += [(int(r), i.tolist(), s.tolist()) for r, i, s in zip(rows, ids, result.scores.cpu())]
    host.train(was_training)
    gathered = gather_object(shard) if state.num_processes > 1 else shard
    for row, ids, row_scores in gathered:
        items[row], scores[row] = ids, row_scores
    return items, scores


def evaluate_llm_run(run_dir: str | Path, split: str = "test", limit: int | None = None, beams: int = 10,
                     batch_size: int = 8, data: str | Path | None = None) -> dict:
    """Evaluate a finished run on ``split``; writes ``metrics_<split>.json`` and ``predictions_<split>.jsonl``.

    The ranked list holds the ``beams`` best items, so metrics at K > beams count only
    those (with the default 10 beams every reported K is complete).
    """
    from tca4rec.llm.run import load_llm_run, process_state

    if beams < 1:
        raise ConfigError(f"--beams {beams}: must be >= 1")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: must be >= 1")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be >= 1")
    state = process_state()
    run = load_llm_run(run_dir, data=data, device=state.device)
    rows = run.dataset.split(split).head(limit)
    items, scores = evaluate_rows(run.host, run.signals, rows, beams=beams, k=beams, batch_size=batch_size,
                                  device=state.device, desc=f"evaluate {split}")
    ranked = np.pad(items, ((0, 0), (0, max(0, max(KS) - beams))))  # empty slots never hit
    ranks = hit_ranks(ranked, rows.targets, run.dataset.title_group)
    record = metrics_record(ranks, split=split, model=run.name, extra={
        "dataset": run.dataset.name, "limit": limit, "run": run.run_dir.name, "beams": beams,
        "host": run.config.host, "alpha": run.config.alpha, "cf": run.config.cf})
    if state.is_main_process:
        atomic_write_json(run.run_dir / f"metrics_{split}.json", record)
        atomic_write_jsonl(run.run_dir / f"predictions_{split}.jsonl", prediction_records(
            run.dataset.titles, rows.users, rows.targets, ranks, items, scores))
    state.wait_for_everyone()
    return record
