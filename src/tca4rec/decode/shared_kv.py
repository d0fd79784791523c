"""A KV cache for beam search in which a prompt's beams share its keys and values.

Why: every beam of a prompt row extends the same prompt (about 230 tokens for the TALLRec
prompt on Office_Products) by a few title tokens. Copying the prompt's cache to each beam
and reordering it every step (``Cache.batch_select_indices``: ~10 MB per beam row per step
for SmolLM2-135M) moves as many bytes as the step's forward reads. Here nothing is copied
after the prefill, and a generated token's keys and values never move:

- per layer, one buffer per prompt row, keys and values [B, Hkv, P + W * T, D]: the
  left-padded prompt (P positions), then one block of W slots per decoding step (W = beam
  width, T = steps so far, the buffer doubling when full). At step s, the beam in slot j of
  row b writes its token at P + s * W + j;
- which generated slots a beam sees is its ancestry, a boolean row over the W * T slots
  inherited from its parent beam each step: the only per-step reordering, of booleans;
- in attention, the beams of a row are that row's query positions (and, as transformers'
  own ``pack_gqa`` does, so are the query heads that share a key/value head): one
  ``scaled_dot_product_attention`` per layer over queries [B, Hkv, W * G, D] and the row's
  keys [B, Hkv, L, D], masked to the prompt plus each beam's ancestry.

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
    """Route ``model``'s attention through ``shared_kv_attention`` inside the block.

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
    ``start``, then before each decoding step ``advance`` with the new beams' parents, and
    run the step inside ``shared_kv_attention`` with ``tca4rec_shared_kv=cache``.
    """

    def __init__(self) -> None:
        super().__init__(layer_class_to_replicate=DynamicLayer)
        self.step = -1  # decoding step of the tokens being written; -1 during the prefill

    def start(self, prompt_mask: torch.Tensor, width: int) -> None:
        """Freeze the prefilled prompt (``prompt_mask`` [B, P], left-padded) for beams of up to
        ``width`` per row."""
        if width < 1:
            raise ConfigError(f"width must be >= 1, got {width}")
        self.width, self.prompt_width = width, prompt_mask.shape[1]
        self.prompt_len = prompt_mask.sum(1)  # [B]
        self.prompt_visible = prompt_mask.bool()  # [B, P]
        self.ancestry = torch.zeros(prompt_mask.shape[0], 0, dtype=torch.bool, device=prompt_mask.device)  # [beams, W*T]
        self.capacity = 0  # steps the buffers hold; doubled when full (titles are mostly far shorter than the longest)
        self.step = -1
        self.updates = self.attention_calls = 0

    def _grow(self) -> None:
        """Room for twice as many steps (at least 8): the only copies of the prompt's KV, log2(T) of them."""
        more = max(8, self.capacity) * self.width
        for layer in self.layers:
            for name in ("keys", "values"):
                kv = getattr(layer, name)  # [B, Hkv, P + W * capacity, D]
                setattr(layer, name, torch.cat([kv, kv.new_zeros(*kv.shape[:2], more, kv.shape[3])], dim=2))
        self.ancestry = torch.cat([self.ancestry, self.ancestry.new_zeros(self.ancestry.shape[0], more)], dim=1)
        self.capacity += more // self.width
        device = self.prompt_len.device
        steps = torch.arange(self.capacity, device=device).repeat_interleave(self.width)  # [W * T] step of each slot
        # Token positions of the buffer's keys [B, P + W * T] (padding: negative, masked anyway).
        padding = self.prompt_width - self.prompt_len
        self.key_position = torch.cat([torch.arange(self.prompt_width, device=device) - padding[:, None],
                                       self.prompt_len[:, None] + steps], dim=1)

    def advance(self, parents: torch.Tensor, samples: torch.Tensor) -> None:
        """Next step's beams: ``parents`` [R] index the previous step's beams (after ``start``: the
        rows), ``samples`` [R] their rows, ascending (beams grouped by row)."""
        device = self.ancestry.device
        parents, samples = parents.to(device), samples.to(device)
        if not bool((samples[1:] >= samples[:-1]).all()):
            raise ConfigError("beams must be grouped by row, rows ascending")
        num_rows, width = self.prompt_len.shape[0], self.width
        counts = torch.bincount(samples, minlength=num_rows)  # [B]
        if int(counts.max()) > width:
            raise ConfigError(f"a row has {int(counts.max())} beams, more than the width {width}")
        self.step += 1
        if self.step == self.capacity:
            self._grow()
        rank = torch.arange(samples.numel(), device=device) - (torch.cumsum(counts, 0) - counts)[samples]  # [R]
        self.slot = samples * width + rank  # [R] in the [B * W] query layout
        self.dense = samples.numel() == num_rows * width  # every slot live, in order: no scatter needed
        own = self.step * width + rank  # [R] this token's generated slot
        ancestry = self.ancestry[parents]  # [R, W * T]
        ancestry[torch.arange(samples.numel(), device=device), own] = True
        self.ancestry = ancestry
        self.write_row, self.write_position = samples, self.prompt_width + own
        self.used = self.prompt_width + (self.step + 1) * width  # keys attended this step
        # Visibility per slot [B, 1, W, used]: the row's prompt, then the beam's ancestry (empty
        # slots see the prompt only, so that no query row is all masked).
        generated = torch.zeros(num_rows * width, (self.step + 1) * width, dtype=torch.bool, device=device)
        generated[self.slot] = ancestry[:, :(self.step + 1) * width]
        visible = torch.cat([self.prompt_visible[:, None, :].expand(num_rows, width, -1),
                             generated.view(num_rows, width, -1)], dim=2)
        self.visible = visible[:, None]
        self.query_position = self.prompt_len + self.step  # [B] same for all beams of a row
        self.masks: dict[tuple[int | None, int], torch.Tensor] = {}

    def mask(self, sliding_window: int | None, groups: int) -> torch.Tensor:
        """[B, 1, W * G, used] visibility of the packed queries (slot-major, then head in group)."""
        key = (sliding_window, groups)
        if key not in self.masks:
            visible = self.visible
            if sliding_window is not None:
                near = self.query_position[:, None] - self.key_position[:, :self.used] < sliding_window  # [B, used]
                visible = visible & near[:, None, None, :]
            self.masks[key] = visible.repeat_interleave(groups, dim=2)
        return self.masks[key]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.used if self.step >= 0 else super().get_seq_length(layer_idx)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Prefill: store the prompt. Decoding: write the beams' tokens [R, Hkv, 1, D] into their
        slots and return the row buffers [B, Hkv, used, D] (read by ``shared_kv_attention`` only)."""
        if self.step < 0:
            return super().update(key_states, value_states, layer_idx, *args, **kwargs)
        layer = self.layers[layer_idx]
        layer.keys[self.write_row, :, self.write_position] = key_states[:, :, 0]
        layer.values[self.write_row, :, self.write_position] = value_states[:, :, 0]
        self.updates += 1
        return layer.keys[:, :, :self.used], layer.values[:, :, :self.used]

    def check_step(self) -> None:
        """Every layer that stored its token also attended through the shared prompt."""
        if self.updates != self.attention_calls or self.updates == 0:
            raise ConfigError(f"{self.updates} cache updates but {self.attention_calls} shared-prompt attention "
                              "calls in a step: the model computes attention outside transformers' "
                              "AttentionInterface; decode with BeamSearchConfig(share_prompt_kv=False)")
        self.updates = self.attention_calls = 0

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float | None,
               sliding_window: int | None, softcap: float | None) -> torch.Tensor:
        """Attention of the beams' queries [R, H, 1, D] over their rows' keys/values [B, Hkv, L, D]:
        [R, 1, H, Dv] (the layout attention functions return)."""
        num_beams, heads, _, dim = query.shape
        rows, kv_heads, length, _ = key.shape
        groups, width = heads // kv_heads, self.width
        q = query[:, :, 0].reshape(num_beams, kv_heads, groups, dim)  # head h = kv head h // G, as repeat_kv
        if not self.dense:
            q = q.new_zeros(rows * width, kv_heads, groups, dim).index_copy_(0, self.slot, q)
        q = q.view(rows, width, kv_heads, groups, dim).transpose(1, 2).reshape(rows, kv_heads, width * groups, dim)
        mask = self.mask(sliding_window, groups)  # [B, 1, W * G, L]
        scale = scaling if scaling is not None else dim ** -0.5
        if softcap is None:
            out = F.scaled_dot_product_attention(q, key, value, attn_mask=mask, scale=scale)
        else:  # Gemma 2's eager attention: cap the scaled scores, then mask and softmax in float32
            scores = torch.tanh(q @ key.transpose(2, 3) * (scale / softcap)) * softcap
            weights = scores.masked_fill(~mask, -torch.inf).softmax(-1, dtype=torch.float32).to(value.dtype)
            out = weights @ value
        out = out.view(rows, kv_heads, width, groups, -1).transpose(1, 2).reshape(rows * width, heads, -1)
        if not self.dense:
            out = out.index_select(0, self.slot)
        return out[:, None]  # [R, 1, H, Dv]


def shared_kv_attention_forward(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                attention_mask, scaling: float | None = None, dropout: float = 0.0,
                                sliding_window: int | None = None, softcap: float | None = None,
                                **kwargs) -> tuple[torch.Tensor, None]:
    """transformers attention function (``AttentionInterface``) of the shared-prompt decoding steps."""
    cache = kwargs.get(CONTEXT_KWARG)
    if not isinstance(cache, SharedPromptCache) or cache.step < 0:
        raise ConfigError(f"the {ATTENTION_NAME} attention runs only in decoding steps of a SharedPromptCache "
                          f"(forward keyword {CONTEXT_KWARG}=cache)")
    if kwargs.get("s_aux") is not None:
        raise ConfigError("attention sinks (s_aux) are not supported: decode with share_prompt_kv=False")
    cache.attention_calls += 1
    return cache.attend(query, key, value, scaling, sliding_window, softcap), None


AttentionInterface.register(ATTENTION_NAME, shared_kv_attention_forward)
