"""Host LLM recommenders: how dataset rows become LLM inputs, for training and decoding alike.

TCA4Rec changes only the training target, so it plugs into any host whose output is an
item title (DESIGN.md, "Architectures"). Three hosts, one code path:

- ``tallrec``: history titles in an instruction prompt; the LLM generates the next title.
- ``llara``: the same prompt with a placeholder slot after each history title and one for
  the user; a trained 2-layer MLP projects the frozen CF model's item / user embeddings
  into the LLM's input-embedding space at those slots (LLaRA / CoLLM).
- ``msl``: TALLRec's prompt, but the softmax is masked to the trie children and divided by
  ``tau`` (training and decoding alike).

``Host`` (an ``nn.Module`` holding the LoRA-wrapped LLM and, for llara, the projector) turns
a batch of rows into left-padded prompt inputs (``PromptBatch``) and runs the forward pass
on prompt + target title tokens. Position ids are ``cumsum(attention_mask) - 1`` here and in
the constrained beam search, so training and decoding see the same positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from tca4rec.errors import ConfigError
from tca4rec.llm.config import HostConfig
from tca4rec.llm.prompts import PromptBuilder, left_pad


@dataclass
class PromptBatch:
    """Left-padded prompts for B rows (P = longest prompt, H = history width)."""

    input_ids: torch.Tensor  # int64 [B, P], pad id on the left
    attention_mask: torch.Tensor  # int64 [B, P]
    slot_positions: torch.Tensor  # int64 [B, H]: prompt position of history column h's slot, -1 if none
    user_slot: torch.Tensor  # int64 [B]: position of the user slot, -1 if none

    def to(self, device) -> "PromptBatch":
        return PromptBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.slot_positions,
                                                    self.user_slot)))


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding; the constrained beam search computes the same."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def context_length(config) -> int | None:
    """The most positions the model reads, by the name its architecture gives it (None if unstated)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class Projector(nn.Module):
    """LLaRA's 2-layer MLP from the CF embedding space to the LLM's input embeddings."""

    def __init__(self, cf_dim: int, hidden: int, llm_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cf_dim, hidden), nn.GELU(), nn.Linear(hidden, llm_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Host(nn.Module):
    """A host recommender: the (LoRA-wrapped) LLM, the prompt builder and, for llara, the projector.

    ``title_ids[i]`` are item i's title tokens (tokenized once, standalone); index 0 is the
    padding item. ``target_tokens`` ([N, L]: title + EOS of item column j, padded with -1)
    is the trie's ``seqs`` table, so training targets are exactly the trie's sequences.
    """

    def __init__(self, config: HostConfig, llm: nn.Module, tokenizer, title_ids: Sequence[Sequence[int]],
                 target_tokens: torch.Tensor, cf_dim: int | None = None) -> None:
        super().__init__()
        self.host_config = config
        self.llm = llm
        self.tokenizer = tokenizer
        self.builder = PromptBuilder(tokenizer, with_slots=config.uses_cf_embeddings)
        self.title_ids = [list(t) for t in title_ids]
        self.register_buffer("target_tokens", target_tokens.long(), persistent=False)
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.context = context_length(llm.config)
        self.projector: Projector | None = None
        if config.uses_cf_embeddings:
            if cf_dim is None:
                raise ConfigError("--host llara needs a CF model (--cf RUN) for its item and user embeddings")
            llm_dim = llm.get_input_embeddings().embedding_dim
            self.projector = Projector(cf_dim, config.projector_hidden or llm_dim, llm_dim)

    # Trainer: our compute_loss takes the token count of the whole accumulated batch.
    accepts_loss_kwargs = True

    # ---- prompts -----------------------------------------------------------------------
    def prompts(self, histories: torch.Tensor) -> PromptBatch:
        """Left-padded prompt ids for histories [B, H] (item ids, left-padded with 0)."""
        histories = histories.cpu()
        built = [self.builder.build([self.title_ids[i] for i in row[row > 0].tolist()]) for row in histories]
        b, h = histories.shape
        self._check_context(max(len(p.ids) for p in built))
        input_ids, attention_mask = left_pad([p.ids for p in built], self.pad_token_id)
        width = input_ids.shape[1]
        slot_positions = torch.full((b, h), -1, dtype=torch.long)
        user_slot = torch.full((b,), -1, dtype=torch.long)
        for r, p in enumerate(built):
            offset = width - len(p.ids)
            if p.slots:
                # Slots follow the real history items in order; those sit in the last columns.
                slot_positions[r, h - len(p.slots):] = torch.tensor(p.slots) + offset
            if p.user_slot is not None:
                user_slot[r] = p.user_slot + offset
        return PromptBatch(input_ids, attention_mask, slot_positions, user_slot)

    def check_fits(self, history: Sequence[int]) -> None:
        """Refuses (``ConfigError``) a history of item ids whose prompt would not fit the model's context."""
        self._check_context(len(self.builder.build([self.title_ids[i] for i in history if i > 0]).ids))

    def _check_context(self, prompt_tokens: int) -> None:
        """A prompt and the longest title (fed up to its EOS) must fit the model's positions: past
        them a learned position table fails deep inside torch, and rotary ones run untrained."""
        title_tokens = self.target_tokens.shape[1] - 1  # without its EOS
        needed = prompt_tokens + title_tokens
        if self.context is not None and needed > self.context:
            raise ConfigError(f"a prompt of {prompt_tokens} tokens and the longest title ({title_tokens} tokens) need "
                              f"{needed} positions, but the model reads at most {self.context}: use shorter "
                              "histories or titles, or a model with a longer context")

    def prompt_embeds(self, prompt: PromptBatch, history_cf: torch.Tensor | None = None,
                      user_cf: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings [B, P, d] of the prompt, CF embeddings projected into the slots.

        history_cf: [B, H, D] CF embeddings of the history columns; user_cf: [B, D].
        """
        embeds = self.llm.get_input_embeddings()(prompt.input_ids)
        if self.projector is None:
            return embeds
        if history_cf is None or user_cf is None:
            raise ConfigError("--host llara needs the CF model's embeddings for every batch")
        has_slot = prompt.slot_positions >= 0  # [B, H]
        rows, cols = has_slot.nonzero(as_tuple=True)
        projected = self.projector(history_cf[rows, cols].to(embeds.dtype))  # [S, d]
        embeds = embeds.index_put((rows, prompt.slot_positions[rows, cols]), projected.to(embeds.dtype))
        users = (prompt.user_slot >= 0).nonzero(as_tuple=True)[0]
        user_vec = self.projector(user_cf[users].to(embeds.dtype))  # [U, d]
        return embeds.index_put((users, prompt.user_slot[users]), user_vec.to(embeds.dtype))

    def decode_inputs(self, prompt: PromptBatch, history_cf: torch.Tensor | None = None,
                      user_cf: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Keyword inputs of the constrained beam search (ids, or embeddings for llara)."""
        if self.projector is None:
            return {"input_ids": prompt.input_ids}
        return {"inputs_embeds": self.prompt_embeds(prompt, history_cf, user_cf)}

    # ---- training forward --------------------------------------------------------------
    def targets(self, items: torch.Tensor) -> torch.Tensor:
        """Title + EOS tokens [B, L] of item columns ``items`` [B], padded with -1 (L = longest)."""
        seqs = self.target_tokens[items.to(self.target_tokens.device)]
        length = int((seqs >= 0).sum(1).max())
        return seqs[:, :length]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, slot_positions: torch.Tensor,
                user_slot: torch.Tensor, target_tokens: torch.Tensor, history_cf: torch.Tensor | None = None,
                user_cf: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, L, V]: ``logits[b, k]`` predicts token k of row b's title + EOS.

        The sequence is prompt (left-padded, P) + target tokens 0..L-2 (right-padded); the
        last L positions (P-1 .. P+L-2) are the ones predicting target tokens 0..L-1, so the
        output layer runs on those alone (``logits_to_keep``).
        """
        prompt = PromptBatch(input_ids, attention_mask, slot_positions, user_slot)
        feed = target_tokens[:, :-1]  # [B, L-1]
        feed_mask = (feed >= 0).long()
        embed = self.llm.get_input_embeddings()
        seq_embeds = torch.cat([self.prompt_embeds(prompt, history_cf, user_cf),
                                embed(feed.clamp(min=0))], dim=1)  # [B, P+L-1, d]
        mask = torch.cat([attention_mask, feed_mask], dim=1)
        out = self.llm(inputs_embeds=seq_embeds, attention_mask=mask, position_ids=position_ids(mask),
                       logits_to_keep=target_tokens.shape[1], use_cache=False)
        return out.logits
