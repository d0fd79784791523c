"""A pre-LayerNorm transformer block shared by SASRec (causal) and BERT4Rec (bidirectional)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TransformerBlock(nn.Module):
    """Self-attention + GELU feed-forward, each with a pre-LayerNorm residual branch."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.attention_norm = nn.LayerNorm(hidden_size)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.attention_out = nn.Linear(hidden_size, hidden_size)
        self.ffn_norm = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(nn.Linear(hidden_size, 4 * hidden_size), nn.GELU(),
                                 nn.Linear(4 * hidden_size, hidden_size), nn.Dropout(dropout))
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x [B, L, D]; allowed bool [B, 1, L, L] (query, key) -> [B, L, D].

        Every query row of ``allowed`` must allow at least one key (else softmax is NaN).
        """
        batch, length, hidden = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                                  dropout_p=self.dropout if self.training else 0.0)
        x = x + self.residual_dropout(self.attention_out(attended.transpose(1, 2).reshape(batch, length, hidden)))
        return x + self.ffn(self.ffn_norm(x))
