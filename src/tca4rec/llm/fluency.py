"""The language side of a fine-tuned run: how well it still predicts text, token by token.

Soft Label Alignment moves probability from the target's next token to the tokens of titles
the CF model prefers; alpha trades the one for the other (DESIGN.md). Two measures of what
that costs, both mean negative log-likelihoods per token (nats; perplexity = exp):

- ``target_nll``: of each row's target title + EOS after its prompt, full-vocabulary softmax
  (the sequence plain next-token training fits; on valid rows, which no run trains on);
- ``text_nll``: of titles read as plain text after the tokenizer's BOS (or EOS) token, no
  prompt: the language model itself, measured on titles the caller holds out (e.g. another
  catalog's), with the LoRA weights and, as the reference, without them (``base_text_nll``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tca4rec.errors import ConfigError
from tca4rec.llm.prompts import title_token_ids
from tca4rec.llm.run import load_llm_run
from tca4rec.llm.train import RowCollator


@torch.no_grad()
def fluency(run_dir: str | Path, rows: int = 500, texts: Sequence[str] = (), split: str = "valid",
            batch_size: int = 8, data: str | Path | None = None) -> dict:
    """``target_nll`` over the first ``rows`` rows of ``split``; ``text_nll`` and ``base_text_nll``
    over ``texts`` (skipped when empty). Returns the means with their token counts."""
    if rows < 1 or batch_size < 1:
        raise ConfigError("rows and batch_size must be >= 1")
    run = load_llm_run(run_dir, data=data, merge=False)  # unmerged: the base model is the adapter disabled
    host, signals = run.host, run.signals
    part = run.dataset.split(split).head(rows)
    collate = RowCollator(host, part)
    total, count = 0.0, 0
    for start in tqdm(range(0, len(part), batch_size), desc=f"target NLL of {run.run_dir.name}", leave=False):
        batch = collate(list(range(start, min(start + batch_size, len(part)))))
        history_cf = user_cf = None
        if host.host_config.uses_cf_embeddings:
            history_cf, user_cf = signals.cf_embeddings(batch["users"], batch["histories"])
        logits = host(batch["input_ids"], batch["attention_mask"], batch["slot_positions"], batch["user_slot"],
                      batch["target_tokens"], history_cf, user_cf).float()  # [B, L, V]
        total += float(F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), reduction="sum"))
        count += int((batch["labels"] != -100).sum())
    record = {"run": run.run_dir.name, "split": split, "rows": len(part), "target_nll": total / count,
              "target_tokens": count}
    if texts:
        ids = title_token_ids(run.signals.tokenizer, texts)
        record.update(text_nll=_text_nll(host.llm, ids, host.tokenizer, batch_size), texts=len(texts),
                      text_tokens=sum(map(len, ids)))
        with host.llm.disable_adapter():
            record["base_text_nll"] = _text_nll(host.llm, ids, host.tokenizer, batch_size)
    return record


def _text_nll(llm, token_ids: list[list[int]], tokenizer, batch_size: int) -> float:
    """Mean NLL per token of each sequence after one start token, right-padded batches."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    total, count = 0.0, 0
    for b in range(0, len(token_ids), batch_size):
        seqs = [[start, *s] for s in token_ids[b:b + batch_size] if s]
        if not seqs:
            continue
        width = max(map(len, seqs))
        ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])  # [B, T]
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        logits = llm(input_ids=ids, attention_mask=mask).logits[:, :-1].float()  # [B, T-1, V]
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        total += float(F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum"))
        count += int((labels != -100).sum())
    return total / max(count, 1)
