"""Slow, obviously-correct references for the alignment tests (walk every item per prefix),
handed to the tests as session fixtures (they are plain functions, safe under hypothesis).

Nothing here is clever: for each target position the items sharing the prefix are found
by comparing whole token lists, and masses are Python ``math.fsum`` of exp(score - max)
over those items.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
import torch


def reference_labels(titles: list[list[int]], eos: int, cf_logits: torch.Tensor, targets: list[int], alpha: float,
                     temperature: float, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense labels [B, L, V] (float64) and the allowed-children mask [B, L, V]."""
    seqs = [list(t) + [eos] for t in titles]
    length = max(len(seqs[t]) for t in targets)
    labels = torch.zeros(len(targets), length, vocab, dtype=torch.float64)
    allowed = torch.zeros(len(targets), length, vocab, dtype=torch.bool)
    for b, t in enumerate(targets):
        s = seqs[t]
        for k in range(len(s)):
            below = [j for j, other in enumerate(seqs) if other[:k] == s[:k]]
            scores = [float(cf_logits[b, j]) / temperature for j in below]
            for j in below:
                allowed[b, k, seqs[j][k]] = True
            labels[b, k, s[k]] += 1 - alpha
            top = max(scores)
            if top == -math.inf:  # q undefined: the one-hot target stands in for it
                labels[b, k, s[k]] += alpha
                continue
            per_token: dict[int, list[float]] = defaultdict(list)
            for j, score in zip(below, scores):
                per_token[seqs[j][k]].append(math.exp(score - top))
            total = math.fsum(math.fsum(w) for w in per_token.values())
            for token, weights in per_token.items():
                labels[b, k, token] += alpha * math.fsum(weights) / total
    return labels, allowed


def reference_loss(logits: torch.Tensor, labels: torch.Tensor, allowed: torch.Tensor, real: torch.Tensor, form: str,
                   masked: bool, tau: float) -> torch.Tensor:
    """The loss on dense float64 tensors: per position, then the mean over real positions."""
    scores = logits.double() / tau
    if masked:
        scores = scores.masked_fill(~allowed, -math.inf)
    log_p = torch.log_softmax(scores, dim=-1)
    if form == "mixture":
        per_position = -torch.logsumexp(torch.log(labels) + log_p, dim=-1)
    else:
        per_position = -torch.where(labels > 0, labels * log_p, torch.zeros_like(log_p)).sum(-1)
    return per_position[real].mean()


@pytest.fixture(scope="session")
def ref_labels():
    return reference_labels


@pytest.fixture(scope="session")
def ref_loss():
    return reference_loss
