"""The language side of a fine-tuned run: how well it still predicts text, token by token.

Soft Label Alignment moves probability from the target's next token to the tokens of titles
the CF model prefers; alpha trades the one for the other (DESIGN.md). Two measures of what
that costs, both mean negative log-likelihoods per token (nats; perplexity = exp):

- ``target_nll``: of each row's target title + EOS after its prompt, full-vocabulary softmax
  (the sequence plain next-token training fits; on valid rows, which no run trains on);
- ``text_nll``: of titles read as plain text after the tokenizer's BOS (or EOS) token, no
  prompt: the language model itself, measured on titles the caller holds out (e.g. another
  catalog's), with the LoRA weights and, as the reference, without them (``base_text_nll``).

Each mean comes with its per-row (per-text) NLL sums and token counts, so that a report can give
it a bootstrap CI and test two runs on the same rows (``evaluate.metrics.paired_difference`` with
``weights``). Rows are batched by length: left padding would otherwise cost most of the compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tca4rec.errors import ConfigError
from tca4rec.llm.prompts import title_token_ids
from tca4rec.llm.run import load_llm_run
from tca4rec.llm.train import RowCollator, row_lengths


@torch.no_grad()
def fluency(run_dir: str | Path, rows: int = 500, texts: Sequence[str] = (), split: str = "valid",
            batch_size: int = 8, data: str | Path | None = None) -> dict:
    """``target_nll`` over the first ``rows`` rows of ``split``; ``text_nll`` and ``base_text_nll``
    over ``texts`` (skipped when empty). Returns the means with their token counts, and per row
    (text) the NLL sum and token count (``target_row_nll``, ``target_row_tokens``, ``text_row_nll``,
    ``base_text_row_nll``, ``text_row_tokens``; in row order)."""
    if rows < 1 or batch_size < 1:
        raise ConfigError("rows and batch_size must be >= 1")
    run = load_llm_run(run_dir, data=data, merge=False)  # unmerged: the base model is the adapter disabled
    host, signals = run.host, run.signals
    part = run.dataset.split(split).head(rows)
    collate = RowCollator(host, part)
    order = np.argsort(row_lengths(host, part), kind="stable")
    sums, counts = np.zeros(len(part)), np.zeros(len(part), dtype=np.int64)
    for start in tqdm(range(0, len(part), batch_size), desc=f"target NLL of {run.run_dir.name}", leave=False):
        rows_here = order[start:start + batch_size]
        batch = collate(rows_here.tolist())
        history_cf = user_cf = None
        if host.host_config.uses_cf_embeddings:
            history_cf, user_cf = signals.cf_embeddings(batch["users"], batch["histories"])
        logits = host(batch["input_ids"], batch["attention_mask"], batch["slot_positions"], batch["user_slot"],
                      batch["target_tokens"], history_cf, user_cf).float()  # [B, L, V]
        sums[rows_here], counts[rows_here] = _row_nll(logits, batch["labels"])
    record = {"run": run.run_dir.name, "split": split, "rows": len(part),
              "target_nll": float(sums.sum() / counts.sum()), "target_tokens": int(counts.sum()),
              "target_row_nll": sums.tolist(), "target_row_tokens": counts.tolist()}
    if texts:
        ids = title_token_ids(run.signals.tokenizer, texts)
        text_sums, text_counts = _text_nll(host.llm, ids, host.tokenizer, batch_size)
        with host.llm.disable_adapter():
            base_sums, _ = _text_nll(host.llm, ids, host.tokenizer, batch_size)
        record.update(text_nll=float(text_sums.sum() / max(text_counts.sum(), 1)), texts=len(texts),
                      text_tokens=int(text_counts.sum()),
                      base_text_nll=float(base_sums.sum() / max(text_counts.sum(), 1)),
                      text_row_nll=text_sums.tolist(), base_text_row_nll=base_sums.tolist(),
                      text_row_tokens=text_counts.tolist())
    return record


def _row_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per row of logits [B, T, V] and labels [B, T] (-100: not scored): NLL sum, scored tokens."""
    nll = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)  # [B, T]
    return nll.double().sum(1).numpy(), (labels != -100).sum(1).numpy()


def _text_nll(llm, token_ids: list[list[int]], tokenizer, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sequence: the NLL sum and count of its tokens after one start token (right-padded
    batches of similar length; an empty sequence scores nothing)."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    sums, counts = np.zeros(len(token_ids)), np.zeros(len(token_ids), dtype=np.int64)
    order = [i for i in np.argsort([len(s) for s in token_ids], kind="stable").tolist() if token_ids[i]]
    for b in range(0, len(order), batch_size):
        here = order[b:b + batch_size]
        seqs = [[start, *token_ids[i]] for i in here]
        width = max(map(len, seqs))
        ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])  # [B, T]
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        logits = llm(input_ids=ids, attention_mask=mask).logits[:, :-1].float()  # [B, T-1, V]
        sums[here], counts[here] = _row_nll(logits, ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100))
    return sums, counts
