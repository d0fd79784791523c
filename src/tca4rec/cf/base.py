"""The interface every collaborative-filtering model obeys, and the model registry.

A CF model maps (user, history) to one logit per item. The LLM side of TCA4Rec only needs
those logits (the Collaborative Tokenizer turns them into next-token distributions) and,
for the LLaRA/CoLLM hosts, the user and item embeddings whose dot product gives them.
So a model is a ``CFModel`` with ``user_embedding`` and ``item_embeddings``; the logits and
the default training loss follow from those two. Adding a model means adding one file
that defines a ``@register_cf_model`` class (RecBole style) and naming it in ``cf/zoo.py``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tca4rec.data.dataset import item_counts
from tca4rec.errors import ConfigError
from tca4rec.validate import check_seed

NEGATIVE_SAMPLING = ("uniform", "popularity")
MAX_LR = 1000.0  # orders of magnitude past any CF model's; a typo's 1e300 overflows torch's float32
MAX_EPOCHS = 100_000  # far past any patience; a typo's 10**20 is refused, not passed to the loop


@dataclass
class CFConfig:
    """Hyper-parameters shared by every CF model; subclasses add model-specific fields."""

    hidden_size: int = 64
    max_history: int = 10  # the model sees the most recent max_history items
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    epochs: int = 200
    patience: int = 10  # epochs without a better valid NDCG@10 before stopping
    seed: int = 0
    # Training softmax: over all items (0), or over the target and this many drawn items shared
    # by the batch (sampled softmax: ~N / num_negatives times cheaper on big catalogs), drawn
    # uniformly or in proportion to train-row popularity (+1) with the logQ correction.
    num_negatives: int = 1000
    negative_sampling: str = "uniform"

    def __post_init__(self) -> None:
        positive = ("hidden_size", "max_history", "batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.lr <= MAX_LR:  # NaN too; past MAX_LR, torch's float32 step may overflow
            raise ConfigError(f"lr must be in (0, {MAX_LR:,}], got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        check_seed(self.seed, "seed")
        if self.num_negatives < 0:
            raise ConfigError(f"num_negatives must be >= 0, got {self.num_negatives}")
        if self.negative_sampling not in NEGATIVE_SAMPLING:
            raise ConfigError(f"negative_sampling must be one of {', '.join(NEGATIVE_SAMPLING)}, "
                              f"got {self.negative_sampling!r}")
        if not 0 <= self.epochs <= MAX_EPOCHS or self.patience < 1:
            raise ConfigError(f"need epochs in 0..{MAX_EPOCHS:,} (0: the untrained model) and patience >= 1, "
                              f"got {self.epochs} and {self.patience}")

    def check_transformer(self, num_layers: int, num_heads: int) -> None:
        """The attention models' shape: heads split the hidden size evenly."""
        if num_layers < 1 or num_heads < 1:
            raise ConfigError(f"num_layers and num_heads must be >= 1, got {num_layers} and {num_heads}")
        if self.hidden_size % num_heads:
            raise ConfigError(f"num_heads {num_heads} must divide hidden_size {self.hidden_size}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "CFConfig":
        """Build from keyword values; an unknown field is a ConfigError naming the known ones."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)} for {cls.__name__} "
                              f"(known: {', '.join(known)})")
        return cls(**values)


def fit_history(histories: torch.Tensor, length: int) -> torch.Tensor:
    """Left-padded [B, H] -> [B, length]: keep the most recent items, left-pad with 0."""
    width = histories.shape[1]
    if width >= length:
        return histories[:, width - length:]
    return F.pad(histories, (length - width, 0))


def prefix_examples(histories: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (prefix -> next item) pair inside the sequence history + target of each row.

    A row with history [a, b, c] and target d yields ([a] -> b), ([a, b] -> c), ([a, b, c] -> d).
    Only the row's own items are used, so this is safe augmentation of train rows.
    Returns (row index [M], histories [M, H] left-padded, targets [M]).
    """
    batch, width = histories.shape
    sequence = torch.cat([histories, targets[:, None]], dim=1)  # [B, H + 1]
    padded = F.pad(sequence, (width, 0))  # [B, 2H + 1]
    # windows[b, j] = the H items before sequence[b, j + 1], left-padded: [B, H, H]
    windows = padded.unfold(1, width, 1)[:, 1:width + 1]
    next_items = sequence[:, 1:]  # [B, H]
    keep = (sequence[:, :-1] > 0) & (next_items > 0)
    rows = torch.arange(batch, device=histories.device)[:, None].expand(batch, width)
    return rows[keep], windows[keep], next_items[keep]


def sampled_softmax_loss(hidden: torch.Tensor, table: torch.Tensor, labels: torch.Tensor,
                         negatives: torch.Tensor, log_q: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of each state [M, D] over its label and negatives [K] shared by the batch.

    ``log_q`` [N + 1]: log probability with which each item is drawn as a negative. The logQ
    correction subtracts it from every candidate's logit, label included (Bengio & Senecal
    2008; Yi et al. 2019), so that sum_k exp(logit_k) / (K q_k) estimates the full softmax's
    normalizer without bias; None: uniform draws, whose correction is one constant and
    cancels. A negative equal to a row's label is dropped from that row (-inf), so the label
    is never counted as its own negative.
    """
    positive = (hidden * table[labels]).sum(-1, keepdim=True)  # [M, 1]
    negative = hidden @ table[negatives].T  # [M, K]
    if log_q is not None:
        positive = positive - log_q[labels][:, None]
        negative = negative - log_q[negatives][None]
    negative = negative.masked_fill(negatives[None] == labels[:, None], float("-inf"))
    return F.cross_entropy(torch.cat([positive, negative], dim=1), torch.zeros_like(labels))


class CFModel(nn.Module):
    """Base class: logits = user_embedding @ item_embeddings().T, padding column = -inf.

    Subclasses set ``name`` and ``config_class`` and implement ``user_embedding`` (and
    ``item_embeddings`` when the output table is not ``self.item_embedding``).
    """

    name: ClassVar[str]
    config_class: ClassVar[type[CFConfig]] = CFConfig
    trainable: ClassVar[bool] = True  # False: statistics from train rows (``fit_statistics``) only

    def __init__(self, config: CFConfig, num_items: int, num_users: int) -> None:
        super().__init__()
        if num_items < 1 or num_users < 1:
            raise ConfigError(f"need num_items >= 1 and num_users >= 1, got {num_items} and {num_users}")
        self.config = config
        self.num_items = num_items
        self.num_users = num_users

    @property
    def device(self) -> torch.device:
        """Where the model's tensors are; a model without parameters (MostPop) by its buffers."""
        return next(itertools.chain(self.parameters(), self.buffers())).device

    @property
    def embedding_dim(self) -> int:
        return int(self.item_embeddings().shape[1])

    def user_embedding(self, users: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        """[B], [B, H] -> [B, D]."""
        raise NotImplementedError

    def item_embeddings(self) -> torch.Tensor:
        """[num_items + 1, D]; row 0 is the padding item."""
        return self.item_embedding.weight[: self.num_items + 1]

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., D] -> [..., num_items + 1] with the padding column at -inf."""
        logits = hidden @ self.item_embeddings().T
        logits[..., 0] = float("-inf")  # in place is safe: the matmul's backward does not need its output
        return logits

    def item_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of states [M, D] against item labels [M] (full or sampled softmax)."""
        num_negatives = self.config.num_negatives
        if num_negatives == 0 or num_negatives >= self.num_items:
            return F.cross_entropy(self.item_logits(hidden), labels)
        if self.config.negative_sampling == "uniform":
            negatives = torch.randint(1, self.num_items + 1, (num_negatives,), device=labels.device)  # [K]
            return sampled_softmax_loss(hidden, self.item_embeddings(), labels, negatives)
        if not hasattr(self, "negative_log_q"):
            raise ConfigError("negative_sampling='popularity' needs the train rows' counts: call fit_statistics first")
        negatives = torch.multinomial(self.negative_log_q.exp(), num_negatives, replacement=True)  # [K], never 0
        return sampled_softmax_loss(hidden, self.item_embeddings(), labels, negatives, self.negative_log_q)

    def forward(self, users: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        """[B], [B, H] -> item logits [B, num_items + 1]."""
        return self.item_logits(self.user_embedding(users, histories))

    def loss(self, users: torch.Tensor, histories: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Item cross-entropy (``item_loss``) on every prefix of history + target."""
        rows, prefixes, next_items = prefix_examples(histories, targets)
        return self.item_loss(self.user_embedding(users[rows], prefixes), next_items)

    def fit_statistics(self, histories: np.ndarray, targets: np.ndarray) -> None:
        """Read what a model needs from train-row counts before training: here the popularity
        distribution of sampled negatives (``negative_sampling='popularity'``, add-one smoothed
        so that every item can be drawn); models built from counts alone override it."""
        if self.config.negative_sampling == "popularity":
            counts = item_counts(histories, targets, self.num_items) + 1.0
            counts[0] = 0.0  # the padding item is never a negative
            log_q = torch.from_numpy(counts / counts.sum()).log().float()  # log 0 = -inf for the padding item
            # Not persistent: a training-time statistic, not part of the model's weights.
            self.register_buffer("negative_log_q", log_q.to(self.device), persistent=False)


CF_MODELS: dict[str, type[CFModel]] = {}


def register_cf_model(cls: type[CFModel]) -> type[CFModel]:
    """Class decorator: make ``cls`` available by ``cls.name`` to the trainer and the CLI."""
    if cls.name in CF_MODELS:
        raise ConfigError(f"CF model name '{cls.name}' registered twice")
    CF_MODELS[cls.name] = cls
    return cls
