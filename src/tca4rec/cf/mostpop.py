"""MostPop: rank items by how often they occur in the train rows. A sanity baseline.

Counts every item of every train row's history and its target. Consecutive rows of a user
repeat history items, so items of active users weigh more, which is what "popular among
recent interactions" should mean here. The logit is log(1 + count); no training.
"""

from __future__ import annotations

import numpy as np
import torch

from tca4rec.cf.base import CFModel, register_cf_model
from tca4rec.data.dataset import item_counts


@register_cf_model
class MostPop(CFModel):
    name = "mostpop"
    trainable = False

    def __init__(self, config, num_items: int, num_users: int) -> None:
        super().__init__(config, num_items, num_users)
        self.register_buffer("log_popularity", torch.zeros(num_items + 1, 1))  # [N + 1, 1]

    def fit_statistics(self, histories: np.ndarray, targets: np.ndarray) -> None:
        counts = item_counts(histories, targets, self.num_items)
        self.log_popularity.copy_(torch.from_numpy(np.log1p(counts))[:, None])

    def user_embedding(self, users: torch.Tensor, histories: torch.Tensor) -> torch.Tensor:
        return torch.ones(users.shape[0], 1, device=self.log_popularity.device)

    def item_embeddings(self) -> torch.Tensor:
        return self.log_popularity
