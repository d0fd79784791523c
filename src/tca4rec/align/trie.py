"""Prefix tree over item titles, stored as flat arrays so that every query is tensor work.

Each item j has a token sequence s_j = title tokens + [EOS]. Items are sorted
lexicographically by s_j; then every trie node n (a token prefix) covers one contiguous
range ``[range_start[n], range_end[n])`` of that order (DESIGN.md, "Prefix tree").

Nodes are numbered breadth first, and within a depth in sorted order. Two facts follow
and the rest of the package leans on them:
- the children of node n are the contiguous ids ``first_child[n] : first_child[n] +
  num_children[n]``, sorted by their incoming ``token``;
- the key ``parent[m] * vocab + token[m]`` increases strictly with m, so "which child of
  n is reached by token v" is one ``searchsorted`` for a whole batch of (n, v) pairs.

A node reached through EOS is a leaf ("terminal"); its range holds the items with exactly
that title (duplicates share a leaf).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tca4rec.errors import ConfigError
from tca4rec.io import atomic_save_tensors

ROOT = 0


class TitleTrie:
    """A trie over the token sequences of N items (column j of CF logits = item j).

    Arrays (int64 tensors; M = number of nodes, N = number of items, L = longest s_j):
      order [N]        item at each sorted position;  rank [N]: sorted position of each item
      seqs [N, L]      s_j padded with -1 (item order, not sorted order)
      lengths [N]      len(s_j) including EOS
      parent, token, depth, range_start, range_end, first_child, num_children [M]
      item_path [N, L+1]  node of prefix s_j[:k] for k = 0..len(s_j); -1 past the leaf
    """

    def __init__(self, item_token_ids: Sequence[Sequence[int]], eos_token_id: int) -> None:
        if len(item_token_ids) == 0:
            raise ConfigError("cannot build a title trie over zero items")
        self.eos_token_id = int(eos_token_id)
        seqs = [list(map(int, s)) + [self.eos_token_id] for s in item_token_ids]
        for j, s in enumerate(seqs):
            if len(s) == 1:
                raise ConfigError(f"item {j} has an empty title (no tokens)")
            if self.eos_token_id in s[:-1]:
                raise ConfigError(f"item {j}'s title contains the EOS token {self.eos_token_id}")
            if min(s) < 0:
                raise ConfigError(f"item {j} has a negative token id")
        n = len(seqs)
        width = max(len(s) for s in seqs)
        padded = np.full((n, width), -1, dtype=np.int64)
        for j, s in enumerate(seqs):
            padded[j, : len(s)] = s
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        self.vocab_bound = int(padded.max()) + 1  # tokens are < vocab_bound

        # Lexicographic order: -1 padding sorts first, but no sequence is a proper prefix
        # of another (all end in EOS), so padding never decides an order between items.
        order = np.lexsort(padded.T[::-1])
        srt = padded[order]
        # lcp[p] = common-prefix length of sorted items p-1 and p (lcp[0] = 0).
        differ = srt[1:] != srt[:-1]  # [N-1, L]
        lcp = np.zeros(n, dtype=np.int64)
        lcp[1:] = np.where(differ.any(1), differ.argmax(1), width)
        slen = lengths[order]

        starts_by_depth, ends_by_depth = [], []
        for d in range(width + 1):
            alive = slen >= d
            is_start = alive & ((np.arange(n) == 0) | (lcp < d))
            starts = np.flatnonzero(is_start)
            # A node ends where the next node of the same depth (or an item too short) starts.
            boundary = np.flatnonzero((lcp < d) | ~alive)
            ends = np.append(boundary, n)[np.searchsorted(boundary, starts, side="right")]
            starts_by_depth.append(starts)
            ends_by_depth.append(ends)

        depth_offset = np.cumsum([0] + [len(s) for s in starts_by_depth])
        m = int(depth_offset[-1])
        parent = np.full(m, -1, dtype=np.int64)
        token = np.full(m, -1, dtype=np.int64)
        depth = np.zeros(m, dtype=np.int64)
        for d in range(1, width + 1):
            lo, hi = depth_offset[d], depth_offset[d + 1]
            starts = starts_by_depth[d]
            parent[lo:hi] = depth_offset[d - 1] + np.searchsorted(starts_by_depth[d - 1], starts, side="right") - 1
            token[lo:hi] = srt[starts, d - 1]
            depth[lo:hi] = d
        num_children = np.bincount(parent[1:], minlength=m).astype(np.int64)
        # parent[1:] is non-decreasing (breadth-first numbering), so a search finds each block.
        first_child = np.where(num_children > 0, np.searchsorted(parent[1:], np.arange(m)) + 1, 0)

        item_path = np.full((n, width + 1), -1, dtype=np.int64)
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        for d in range(width + 1):
            ok = lengths >= d
            item_path[ok, d] = depth_offset[d] + np.searchsorted(starts_by_depth[d], rank[ok], side="right") - 1

        t = torch.from_numpy
        self.order, self.rank = t(order), t(rank)
        self.seqs, self.lengths = t(padded), t(lengths)
        self.parent, self.token, self.depth = t(parent), t(token), t(depth)
        self.range_start = t(np.concatenate(starts_by_depth).astype(np.int64))
        self.range_end = t(np.concatenate(ends_by_depth).astype(np.int64))
        self.first_child, self.num_children = t(first_child), t(num_children)
        self.item_path = t(item_path)
        self._edge_key = self.parent[1:] * self.vocab_bound + self.token[1:]  # strictly increasing

    # ---- device -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.order.device

    def to(self, device: torch.device | str) -> "TitleTrie":
        """This trie with every array on ``device`` (like ``Tensor.to``: self if already there)."""
        device = torch.device(device)
        if device.type == self.device.type and (device.index is None or device == self.device):
            return self
        moved = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(moved, name, value.to(device))
        return moved

    # ---- sizes -------------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        return int(self.order.shape[0])

    @property
    def num_nodes(self) -> int:
        return int(self.parent.shape[0])

    def is_leaf(self, nodes: torch.Tensor) -> torch.Tensor:
        """True where the node was reached through EOS (its only 'child' is the end)."""
        return self.token[nodes] == self.eos_token_id

    # ---- queries used by the tokenizer and the decoder ---------------------------------
    def step(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child of each node reached by each token; -1 where that token leaves the trie."""
        nodes, tokens = nodes.long(), tokens.long()
        ok = (tokens >= 0) & (tokens < self.vocab_bound) & (nodes >= 0)
        key = nodes.clamp(min=0) * self.vocab_bound + tokens.clamp(0, self.vocab_bound - 1)
        pos = torch.searchsorted(self._edge_key, key).clamp(max=self._edge_key.numel() - 1)
        found = ok & (self._edge_key[pos] == key)
        return torch.where(found, pos + 1, torch.full_like(pos, -1))

    def children(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flattened children of a batch of nodes: (row index into ``nodes``, child node id).

        Children of ``nodes[r]`` appear consecutively, sorted by token; their tokens are
        ``self.token[child]``.
        """
        counts = self.num_children[nodes]  # [B]
        rows = torch.repeat_interleave(torch.arange(nodes.numel(), device=nodes.device), counts)
        seg_start = torch.cumsum(counts, 0) - counts
        offset = torch.arange(rows.numel(), device=nodes.device) - seg_start[rows]
        return rows, self.first_child[nodes][rows] + offset

    def allowed_mask(self, nodes: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """Bool [B, vocab_size]: True at the tokens allowed after each node."""
        rows, kids = self.children(nodes)
        mask = torch.zeros(nodes.numel(), vocab_size, dtype=torch.bool, device=nodes.device)
        mask[rows, self.token[kids]] = True
        return mask

    def items_at(self, node: int) -> torch.Tensor:
        """Item columns whose sequence passes through ``node`` (all items of a leaf's title)."""
        return self.order[self.range_start[node]: self.range_end[node]]

    def leaf_of(self, items: torch.Tensor) -> torch.Tensor:
        """The leaf (EOS-terminated) node of each item."""
        return self.item_path[items, self.lengths[items]]

    def walk(self, tokens: Sequence[int]) -> int:
        """Node of a token prefix from the root, or -1 if the prefix is not in the trie."""
        node = ROOT
        for tok in tokens:
            node = int(self.step(torch.tensor([node], device=self.device), torch.tensor([tok], device=self.device))[0])
            if node < 0:
                return -1
        return node

    # ---- persistence -------------------------------------------------------------------
    def item_token_ids(self) -> list[list[int]]:
        """The title token ids the trie was built from (EOS removed)."""
        return [row[: int(n) - 1].tolist() for row, n in zip(self.seqs, self.lengths)]

    def save(self, path: str | Path) -> None:
        """Save atomically as safetensors (rebuilt from the title tokens on load)."""
        atomic_save_tensors(path, {"seqs": self.seqs, "lengths": self.lengths},
                            metadata={"eos_token_id": str(self.eos_token_id), "format": "tca4rec.TitleTrie/1"})

    @classmethod
    def load(cls, path: str | Path) -> "TitleTrie":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != "tca4rec.TitleTrie/1":
                raise ConfigError(f"{path}: not a tca4rec title trie file")
            seqs, lengths = f.get_tensor("seqs"), f.get_tensor("lengths")
        eos = int(meta["eos_token_id"])
        return cls([row[: int(n) - 1].tolist() for row, n in zip(seqs, lengths)], eos)
