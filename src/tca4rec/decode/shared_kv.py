"""A KV cache for beam search in which a prompt's beams share its keys and values.

Why: every beam of a prompt row extends the same prompt (about 230 tokens for the TALLRec
prompt on Office_Products) by a few title tokens. Copying the prompt's cache to each beam
and reordering it every step (``Cache.batch_select_indices``: ~10 MB per beam row per step
for SmolLM2-135M) moves as many bytes as the step's forward reads. Here nothing is copied
after the prefill, and a generated token's keys and values never move:

- per layer, one buffer per prompt row, keys and values [B, Hkv, P + S, D]: the left-padded
  prompt (P positions), then S slots for generated tokens, handed out in the order the
  tokens are fed (the buffer doubles when full);
- a forward feeds any set of tokens: for each beam that needs one, a chain of tokens (its
  next token, and the forced tokens after it: see beam.py). Each fed token sees its row's
  prompt, the beam's earlier tokens (its ancestry: a boolean row over the S slots, inherited
  from the parent beam each step, the only per-step reordering) and the chain's tokens up to
  itself. The model sees the fed tokens as a batch of one-token sequences; all their keys
  and values are written before attention, so a chain attends causally within one forward;
- in attention, the tokens a row feeds are that row's query positions (and, as transformers'
  own ``pack_gqa`` does, so are the query heads sharing a key/value head): one
  ``scaled_dot_product_attention`` per layer over queries [B, Hkv, Q * G, D] and the row's
  keys [B, Hkv, L, D], masked to what each token sees.

The hook into a Hugging Face model is its attention interface: during the decoding steps
the model's ``_attn_implementation`` is switched to ``ATTENTION_NAME`` (``shared_kv_attention``
below, registered with transformers' ``AttentionInterface``), and the forward gets the cache as
the keyword argument ``tca4rec_shared_kv``, which transformers pass through to the attention
function. No mask function is registered under that name, so transformers build no masks for
these steps; the cache builds its own from the token positions, sliding windows included.
Logit soft-capping (Gemma 2) cannot go through SDPA: those layers use the same layout with
eager arithmetic. Models whose attention does not go through the interface (see
``shared_kv_unsupported``) decode with a per-beam copied cache instead (beam.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, Cache, DynamicLayer, PreTrainedConfig, PreTrainedModel

from tca4rec.errors import ConfigError

ATTENTION_NAME = "tca4rec_shared_kv"
CONTEXT_KWARG = "tca4rec_shared_kv"  # forward keyword that carries the cache to the attention function
SUPPORTED_LAYER_TYPES = {"full_attention", "sliding_attention"}


def shared_kv_unsupported(model) -> str | None:
    """Why ``model`` cannot share prompt KV among beams, or None if it can.

    Sharing needs every attention layer to call transformers' attention interface with the
    standard signature (``_supports_attention_backend`` on the model class) and to be a plain
    or sliding-window softmax attention (no linear-attention, chunked or cross-attention layers).
    """
    hf = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    if hf is None or not type(hf)._supports_attention_backend:
        name = type(hf if hf is not None else model).__name__
        return f"{name} does not compute attention through transformers' AttentionInterface"
    text = hf.config.get_text_config(decoder=True)
    if getattr(text, "is_encoder_decoder", False) or getattr(text, "add_cross_attention", False):
        return f"{type(hf).__name__} has cross-attention"
    other = set(getattr(text, "layer_types", None) or ["full_attention"]) - SUPPORTED_LAYER_TYPES
    if other:
        return f"{type(hf).__name__} has {', '.join(sorted(other))} layers"
    return None


@contextmanager
def shared_kv_attention(model) -> Iterator[None]:
    """Route ``model``'s attention through ``shared_kv_attention_forward`` inside the block.

    Every configuration object the model's modules read is switched (a PEFT wrapper and its
    base model share one) and restored in the same order on exit, errors included.
    """
    configs: list[PreTrainedConfig] = []
    for module in model.modules():
        config = getattr(module, "config", None)
        if isinstance(config, PreTrainedConfig) and all(config is not c for c in configs):
            configs.append(config)
    saved = [config._attn_implementation for config in configs]
    try:
        for config in configs:
            config._attn_implementation = ATTENTION_NAME
        yield
    finally:
        for config, old in zip(configs, saved):  # parents before their sub-configs, as found
            config._attn_implementation = old


class SharedPromptCache(Cache):
    """Prompt KV once per row, generated KV once per token (see the module docstring).

    Use: run the prefill with this cache (it behaves as a ``DynamicCache`` then), call
    ``start``; then every search step ``select`` the new beams' parents, and in the steps that
    feed tokens ``feed`` them and run the forward inside ``shared_kv_attention`` with
    ``tca4rec_shared_kv=cache``.
    """

    def __init__(self) -> None:
        super().__init__(layer_class_to_replicate=DynamicLayer)
        self.decoding = False  # False during the prefill

    def start(self, prompt_mask: torch.Tensor) -> None:
        """Freeze the prefilled prompt (``prompt_mask`` [B, P], left-padded); each row's one beam is its prompt."""
        num_rows, self.prompt_width = prompt_mask.shape
        device = prompt_mask.device
        self.prompt_len = prompt_mask.sum(1)  # [B]
        self.prompt_visible = prompt_mask.bool()  # [B, P]
        # Token position of every key [B, P + S] (padding: negative, masked anyway).
        self.key_position = torch.arange(self.prompt_width, device=device) - (self.prompt_width - self.prompt_len)[:, None]
        self.ancestry = torch.zeros(num_rows, 0, dtype=torch.bool, device=device)  # [beams, S]
        self.filled = torch.zeros(num_rows, dtype=torch.long, device=device)  # generated slots used per row
        self.capacity = 0  # generated slots the buffers hold
        self.used = self.prompt_width
        self.decoding = True
        self.updates = self.attention_calls = 0

    def _grow(self, need: int) -> None:
        """Room for at least ``need`` generated slots, doubling: log2(S) copies of the prompt's KV in all."""
        more = max(need, 2 * self.capacity, 64) - self.capacity
        for layer in self.layers:
            for name in ("keys", "values"):
                kv = getattr(layer, name)  # [B, Hkv, P + capacity, D]
                setattr(layer, name, torch.cat([kv, kv.new_zeros(*kv.shape[:2], more, kv.shape[3])], dim=2))
        self.ancestry = torch.cat([self.ancestry, self.ancestry.new_zeros(self.ancestry.shape[0], more)], dim=1)
        self.key_position = torch.cat([self.key_position, self.key_position.new_zeros(self.key_position.shape[0],
                                                                                        more)], dim=1)
        self.capacity += more

    def select(self, parents: torch.Tensor, samples: torch.Tensor) -> None:
        """The next step's beams: ``parents`` [R] index the previous step's beams (after ``start``:
        the rows), ``samples`` [R] are their rows, ascending (beams grouped by row)."""
        parents, samples = parents.to(self.ancestry.device), samples.to(self.ancestry.device)
        if not bool((samples[1:] >= samples[:-1]).all()):
            raise ConfigError("beams must be grouped by row, rows ascending")
        self.ancestry = self.ancestry[parents]  # [R, S]
        self.samples = samples

    def feed(self, owner: torch.Tensor, chain_index: torch.Tensor, positions: torch.Tensor) -> None:
        """Tokens of the coming forward [F]: the beam (index into this step's beams) each extends,
        ascending, its place along that beam's chain (0, 1, ...) and its token position."""
        device = self.ancestry.device
        owner, chain_index, positions = owner.to(device), chain_index.to(device), positions.to(device)
        if not bool((owner[1:] >= owner[:-1]).all()):
            raise ConfigError("fed tokens must be grouped by beam, beams ascending")
        num_rows, fed = self.prompt_len.shape[0], owner.numel()
        rows = self.samples[owner]  # [F]
        counts = torch.bincount(rows, minlength=num_rows)  # [B] tokens each row feeds
        rank = torch.arange(fed, device=device) - (torch.cumsum(counts, 0) - counts)[rows]  # [F] within its row
        slot = self.filled[rows] + rank  # [F] generated slot of each token
        self.filled += counts
        if int(self.filled.max()) > self.capacity:
            self._grow(int(self.filled.max()))
        self.used = self.prompt_width + int(self.filled.max())  # keys attended this forward
        # What each token sees of the generated slots [F, S]: its beam's ancestry, then its
        # chain up to itself (same beam, earlier or same place).
        sees = self.ancestry[owner]
        same_chain = (owner[:, None] == owner[None, :]) & (chain_index[None, :] <= chain_index[:, None])  # [F, F]
        token, earlier = same_chain.nonzero(as_tuple=True)
        sees[token, slot[earlier]] = True
        self.ancestry[owner, slot] = True  # from now on each beam sees its whole fed chain
        self.key_position[rows, self.prompt_width + slot] = positions
        self.write_row, self.write_position = rows, self.prompt_width + slot
        # Query layout [B * Q]: a row's tokens are its query positions (empty ones see the prompt
        # only, so that no query row is all masked).
        self.width = int(counts.max())
        self.slot = rows * self.width + rank  # [F]
        generated = torch.zeros(num_rows * self.width, self.used - self.prompt_width, dtype=torch.bool, device=device)
        generated[self.slot] = sees[:, :self.used - self.prompt_width]
        visible = torch.cat([self.prompt_visible[:, None, :].expand(num_rows, self.width, -1),
                             generated.view(num_rows, self.width, -1)], dim=2)
        self.visible = visible[:, None]  # [B, 1, Q, used]
        query_position = torch.zeros(num_rows * self.width, dtype=torch.long, device=device)
        self.query_position = query_position.index_copy_(0, self.slot, positions).view(num_rows, self.width)
        self.masks: dict[tuple[int | None, int], torch.Tensor] = {}

    def mask(self, sliding_window: int | None, groups: int) -> torch.Tensor:
        """[B, 1, Q * G, used] visibility of the packed queries (token-major, then head in group)."""
        key = (sliding_window, groups)
        if key not in self.masks:
            visible = self.visible
            if sliding_window is not None:
                near = self.query_position[:, :, None] - self.key_position[:, None, :self.used] < sliding_window
                visible = visible & near[:, None]  # [B, 1, Q, used]
            self.masks[key] = visible.repeat_interleave(groups, dim=2)
        return self.masks[key]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.used if self.decoding else super().get_seq_length(layer_idx)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Prefill: store the prompt. Decoding: write the fed tokens [F, Hkv, 1, D] into their
        slots and return the row buffers [B, Hkv, used, D] (read by ``shared_kv_attention`` only)."""
        if not self.decoding:
            return super().update(key_states, value_states, layer_idx, *args, **kwargs)
        layer = self.layers[layer_idx]
        layer.keys[self.write_row, :, self.write_position] = key_states[:, :, 0]
        layer.values[self.write_row, :, self.write_position] = value_states[:, :, 0]
        self.updates += 1
        return layer.keys[:, :, :self.used], layer.values[:, :, :self.used]

    def check_step(self) -> None:
        """Every layer that stored the fed tokens also attended through the shared prompt (per forward)."""
        if self.updates != self.attention_calls or self.updates == 0:
            raise ConfigError(f"{self.updates} cache updates but {self.attention_calls} shared-prompt attention "
                              "calls in a forward: the model computes attention outside transformers' "
                              "AttentionInterface; decode with BeamSearchConfig(share_prompt_kv=False)")
        self.updates = self.attention_calls = 0

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float | None,
               sliding_window: int | None, softcap: float | None) -> torch.Tensor:
        """Attention of the fed tokens' queries [F, H, 1, D] over their rows' keys/values [B, Hkv, L, D]:
        [F, 1, H, Dv] (the layout attention functions return)."""
        fed, heads, _, dim = query.shape
        rows, kv_heads, length, _ = key.shape
        groups, width = heads // kv_heads, self.width
        q = query[:, :, 0].reshape(fed, kv_heads, groups, dim)  # head h = kv head h // G, as repeat_kv
        q = q.new_zeros(rows * width, kv_heads, groups, dim).index_copy_(0, self.slot, q)
        q = q.view(rows, width, kv_heads, groups, dim).transpose(1, 2).reshape(rows, kv_heads, width * groups, dim)
        mask = self.mask(sliding_window, groups)  # [B, 1, Q * G, L]
        scale = scaling if scaling is not None else dim ** -0.5
        if softcap is None:
            out = F.scaled_dot_product_attention(q, key, value, attn_mask=mask, scale=scale)
        else:  # Gemma 2's eager attention: cap the scaled scores, then mask and softmax in float32
            scores = torch.tanh(q @ key.transpose(2, 3) * (scale / softcap)) * softcap
            weights = scores.masked_fill(~mask, -torch.inf).softmax(-1, dtype=torch.float32).to(value.dtype)
            out = weights @ value
        out = out.view(rows, kv_heads, width, groups, -1).transpose(1, 2).reshape(rows * width, heads, -1)
        return out.index_select(0, self.slot)[:, None]  # [F, 1, H, Dv]


def shared_kv_attention_forward(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                attention_mask, scaling: float | None = None, dropout: float = 0.0,
                                sliding_window: int | None = None, softcap: float | None = None,
                                **kwargs) -> tuple[torch.Tensor, None]:
    """transformers attention function (``AttentionInterface``) of the shared-prompt decoding steps
    (``dropout`` is unused: the search runs the model in eval mode)."""
    cache = kwargs.get(CONTEXT_KWARG)
    if not isinstance(cache, SharedPromptCache) or not cache.decoding:
        raise ConfigError(f"the {ATTENTION_NAME} attention runs only in decoding steps of a SharedPromptCache "
                          f"(forward keyword {CONTEXT_KWARG}=cache)")
    if kwargs.get("s_aux") is not None:
        raise ConfigError("attention sinks (s_aux) are not supported: decode with share_prompt_kv=False")
    cache.attention_calls += 1
    return cache.attend(query, key, value, scaling, sliding_window, softcap), None


AttentionInterface.register(ATTENTION_NAME, shared_kv_attention_forward)
