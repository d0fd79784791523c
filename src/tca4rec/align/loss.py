"""Soft next-token loss (Soft Label Alignment) over sparse collaborative labels.

Two forms (DESIGN.md, "Soft Label Alignment"), both averaged over the real positions:
  mixture (default, the released method):  -log sum_v y(v) p(v)
  ce:                                       -sum_v y(v) log p(v)
Both equal plain next-token cross-entropy at alpha = 0.

p is a softmax of logits / tau over the whole vocabulary, or with ``masked=True`` over
the trie children of the position's node only (the MSL host). The labels' support is
exactly those children, so log p is read by gathering the logits at the label entries:
no dense [B, L, V] label tensor exists, and the masked form never touches the rest of
the vocabulary.
"""

from __future__ import annotations

import math
import numbers

import torch

from tca4rec.align.tokenizer import SoftLabels, segment_logsumexp
from tca4rec.errors import ConfigError

FORMS = ("mixture", "ce")


def soft_ntp_loss(logits: torch.Tensor, labels: SoftLabels, form: str = "mixture", masked: bool = False,
                  tau: float = 1.0) -> torch.Tensor:
    """Mean soft next-token loss; ``logits[b, k]`` [B, L, V] predicts token k of target b's title + EOS."""
    if form not in FORMS:
        raise ConfigError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    if not (isinstance(tau, numbers.Real) and math.isfinite(tau) and tau > 0):
        raise ConfigError(f"tau must be a positive finite number, got {tau}")
    if logits.ndim != 3 or tuple(logits.shape[:2]) != labels.shape:
        raise ConfigError(f"logits must have shape [{labels.shape[0]}, {labels.shape[1]}, V] to match the labels, "
                          f"got {list(logits.shape)}")
    b, length, vocab = logits.shape
    labels = labels.to(logits.device)
    if labels.index.numel() and int(labels.index.max()) >= vocab:
        raise ConfigError(f"logits have {vocab} vocabulary entries but the labels use token id "
                          f"{int(labels.index.max())}")

    dtype = torch.promote_types(logits.dtype, torch.float32)  # half-precision logits are read in float32
    flat = logits.reshape(b * length, vocab)
    scores = flat[labels.position, labels.index].to(dtype) / tau  # [E]
    if masked:
        normalizer = segment_logsumexp(scores, labels.position, b * length)  # over the node's children
    else:
        # logsumexp saves its input (the logits) and a [B*L] result for backward; a
        # log_softmax would store a second [B*L, V] tensor.
        normalizer = torch.logsumexp((flat if tau == 1 else flat / tau).to(dtype), dim=-1)
    log_p = scores - normalizer[labels.position]  # [E]

    weight = labels.weight.to(dtype)
    if form == "mixture":
        per_position = -segment_logsumexp(log_p + torch.log(weight), labels.position, b * length)
    else:
        # Zero weights contribute 0 even where log p = -inf (0 * -inf would be NaN).
        terms = torch.where(weight > 0, weight * log_p, torch.zeros_like(log_p))
        per_position = -torch.zeros(b * length, dtype=dtype, device=logits.device).index_add(
            0, labels.position, terms)
    real = labels.nodes.reshape(-1) >= 0
    return per_position[real].mean()
