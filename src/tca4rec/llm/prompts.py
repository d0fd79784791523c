"""Prompts: the user's history as item titles, in a TALLRec/BIGRec-style instruction.

The prompt starts with the special tokens the tokenizer itself puts before a text (BOS,
for tokenizers that add one) and is tokenized piece by piece; the target title's ids
(tokenized once, standalone, see ``title_token_ids``) are appended after it: never "prompt + title" as one
string, whose BPE merges across the boundary would disagree with the title trie.

For hosts that inject CF embeddings (LLaRA/CoLLM), each history title is followed by one
placeholder token whose input embedding the host replaces; ``PromptIds.slots`` holds
their positions. The placeholder is an ordinary token of the vocabulary (no new
embedding rows), so any tokenizer works unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# Short on purpose: every prompt token costs compute on every training step and beam.
INSTRUCTION = "### Instruction:\nGiven the items a user interacted with, in order, recommend the next one.\n### Input:\n"
RESPONSE = "\n### Response:\n"
PLACEHOLDER = " [emb]"  # tokenized standalone; its ids mark one slot each (see slots)


@dataclass(frozen=True)
class PromptIds:
    ids: list[int]  # prompt token ids, no padding
    slots: list[int]  # positions (into ids) of the CF-embedding placeholders; [] without
    user_slot: int | None = None  # position of the user-embedding placeholder, if any


def title_token_ids(tokenizer, titles: Sequence[str]) -> list[list[int]]:
    """Each title tokenized once, standalone, without special tokens (the trie's ids).

    A title is text, never control: one that holds a special token's text ("Pen <|im_end|>")
    is tokenized as those characters. Read as the special token, EOS inside a title made the
    whole catalog unusable (the trie ends a title at EOS) and a turn marker in a history told
    the model a new turn began.

    A fast tokenizer's Rust backend is called directly: the same ids, without a Python
    BatchEncoding per title, about 2x faster on the million titles of a large catalog."""
    if getattr(tokenizer, "is_fast", False) and hasattr(tokenizer, "backend_tokenizer"):
        backend = tokenizer.backend_tokenizer
        # transformers sets this flag on the shared backend per call too (``split_special_tokens``)
        before, backend.encode_special_tokens = backend.encode_special_tokens, True
        try:
            return [enc.ids for enc in backend.encode_batch(list(titles), add_special_tokens=False)]
        finally:
            backend.encode_special_tokens = before
    return [list(ids) for ids in tokenizer(list(titles), add_special_tokens=False, split_special_tokens=True).input_ids]


def special_prefix(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before a text by itself (BOS for Llama, Gemma or
    OPT style tokenizers; [] for GPT-2 style ones). Read from its output, not from a flag:
    ``add_bos_token`` is absent or False in many tokenizers whose post-processor adds BOS."""
    plain = tokenizer("a", add_special_tokens=False).input_ids
    full = tokenizer("a").input_ids
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start]
    return []


class PromptBuilder:
    """Builds prompt ids from history titles; pieces are tokenized once and concatenated."""

    def __init__(self, tokenizer, with_slots: bool = False) -> None:
        self.tokenizer = tokenizer
        self.with_slots = with_slots
        enc = lambda text: tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
        self._head = special_prefix(tokenizer) + enc(INSTRUCTION)
        self._user = enc("User")
        self._history = enc(". History: ")
        self._tail = enc(RESPONSE)
        self._sep = enc(", ")
        self._quote = enc('"')
        self._placeholder = enc(PLACEHOLDER)

    def build(self, history_title_ids: Sequence[Sequence[int]]) -> PromptIds:
        """history_title_ids: the history's title token ids, oldest first."""
        ids = self._head + self._user
        user_slot = None
        if self.with_slots:
            ids += self._placeholder
            user_slot = len(ids) - 1
        ids += self._history
        slots: list[int] = []
        for n, title in enumerate(history_title_ids):
            if n:
                ids += self._sep
            ids += self._quote + list(title) + self._quote
            if self.with_slots:
                ids += self._placeholder
                slots.append(len(ids) - 1)  # the placeholder's last token carries the embedding
        ids += self._tail
        return PromptIds(ids=ids, slots=slots, user_slot=user_slot)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask [B, P] of prompts left-padded to the longest.

    Left padding puts every prompt's last token in the last column, where generation starts.
    """
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids, mask
