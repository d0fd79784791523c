"""Collaborative Tokenizer: turn a CF model's item logits into sparse next-token soft labels.

For a target item t with token sequence s_t = title + EOS, position k sits at the trie
node n_k = s_t[:k]. The collaborative distribution there is a softmax over the items
below n_k, summed per next token (DESIGN.md, "Collaborative Tokenizer"):

    q(v | n_k) = mass(child(n_k, v)) / mass(n_k),   mass(n) = sum_{i in I(n)} exp(z_i / T)

and the label is y_k = (1 - alpha) onehot(s_tk) + alpha q(. | n_k). Its support is
children(n_k), so the labels are stored sparse: one entry per (position, child).

How masses are computed exactly, for the whole batch at once: in trie (sorted) order,
the off-path children of n_0 .. n_{m-1} plus the target's leaf are contiguous ranges
that partition all N items. One segment log-sum-exp over that partition (each segment
stabilized by its own max, in float64) gives every off-path child's log-mass; a path
node's log-mass is the log-sum-exp of everything below it, i.e. a reverse cumulative
log-sum-exp along the path. Only sums of positive terms appear, so a subtree 1e4 nats
below the global maximum keeps full relative precision (a global prefix sum of
exp(z - max z) would cancel it away).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from tca4rec.align.trie import TitleTrie
from tca4rec.errors import ConfigError

IGNORE_INDEX = -100  # target-token padding, as in torch's cross-entropy

_FORMAT = "tca4rec.CollaborativeTokenizer/1"


def segment_logsumexp(values: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    """log sum exp of ``values`` [K] per ``segment`` id [K] -> [num_segments]; empty or all -inf -> -inf.

    Each segment is shifted by its own max (detached: the shift cancels in the value and
    the gradient), so no segment loses precision to another one's scale. Differentiable.
    """
    peak = torch.full((num_segments,), -math.inf, dtype=values.dtype, device=values.device)
    peak = peak.scatter_reduce(0, segment, values.detach(), reduce="amax")
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    total = torch.zeros_like(peak).index_add(0, segment, torch.exp(values - peak[segment]))
    return peak + torch.log(total)


def _contiguous_logsumexp(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """log sum exp of consecutive runs of ``values`` with the given ``lengths`` (no gradient)."""
    peak = torch.segment_reduce(values, "max", lengths=lengths, unsafe=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    shifted = values - peak.repeat_interleave(lengths, output_size=values.numel())
    return peak + torch.segment_reduce(torch.exp(shifted), "sum", lengths=lengths, unsafe=True).log()


@dataclass
class SoftLabels:
    """Sparse soft next-token labels for a batch of B targets, L = longest title + EOS.

    ``position`` is the flat index b * L + k of an entry; the entries of one position are
    all children of its trie node (zero weights included, so a masked softmax can read its
    support from them), and each real position's weights sum to 1.
    """

    targets: torch.Tensor  # [B, L] long: target title token ids + EOS, IGNORE_INDEX past the end
    nodes: torch.Tensor  # [B, L] long: trie node of each position, -1 past the end
    position: torch.Tensor  # [E] long: flat position b * L + k
    index: torch.Tensor  # [E] long: token id (a child of the position's node)
    weight: torch.Tensor  # [E] float64: y_k(token)

    @property
    def shape(self) -> tuple[int, int]:
        """(B, L)."""
        return (int(self.targets.shape[0]), int(self.targets.shape[1]))

    def to(self, device: torch.device | str) -> "SoftLabels":
        return SoftLabels(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def to_dense(self, vocab_size: int) -> torch.Tensor:
        """[B, L, vocab_size] labels, all-zero rows past each title's end. Tests and small cases only."""
        if self.index.numel() and int(self.index.max()) >= vocab_size:
            raise ConfigError(f"vocab_size {vocab_size} is too small for token id {int(self.index.max())}")
        b, length = self.shape
        dense = torch.zeros(b * length, vocab_size, dtype=self.weight.dtype, device=self.weight.device)
        dense.index_put_((self.position, self.index), self.weight, accumulate=True)
        return dense.view(b, length, vocab_size)


class CollaborativeTokenizer:
    """Maps CF item logits to token-level soft labels over a fixed catalog (built once).

    ``item_token_ids[j]``: the title token ids of item column j (no EOS, no special tokens).
    """

    def __init__(self, item_token_ids: Sequence[Sequence[int]], eos_token_id: int) -> None:
        self.trie = TitleTrie(item_token_ids, eos_token_id)

    @property
    def num_items(self) -> int:
        return self.trie.num_items

    @property
    def eos_token_id(self) -> int:
        return self.trie.eos_token_id

    def _check(self, cf_logits: torch.Tensor, targets: torch.Tensor, alpha: float, temperature: float) -> None:
        if not (isinstance(alpha, numbers.Real) and 0.0 <= alpha <= 1.0):
            raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
        if not (isinstance(temperature, numbers.Real) and math.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"temperature must be a positive finite number, got {temperature}")
        if cf_logits.ndim != 2 or cf_logits.shape[1] != self.num_items:
            raise ConfigError(f"cf_logits must have shape [B, {self.num_items}] (one column per item), "
                              f"got {list(cf_logits.shape)}")
        if not cf_logits.is_floating_point():
            raise ConfigError(f"cf_logits must be a float tensor, got {cf_logits.dtype}")
        if targets.ndim != 1 or targets.shape[0] != cf_logits.shape[0]:
            raise ConfigError(f"targets must have shape [{cf_logits.shape[0]}], got {list(targets.shape)}")
        if targets.is_floating_point() or targets.dtype == torch.bool:
            raise ConfigError(f"targets must be integer item columns, got {targets.dtype}")
        bad = (targets < 0) | (targets >= self.num_items)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise ConfigError(f"targets[{row}] = {int(targets[row])} is not an item column (0..{self.num_items - 1})")
        if bool((torch.isnan(cf_logits) | torch.isposinf(cf_logits)).any()):
            raise ConfigError("cf_logits contain NaN or +inf (use -inf to rule an item out)")

    @torch.no_grad()
    def soft_labels(self, cf_logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.1,
                    temperature: float = 1.0) -> SoftLabels:
        """Soft labels y_k for each target's title + EOS (on the CPU; move them with ``.to``).

        cf_logits: [B, N] item logits; targets: [B] item columns. Where every item below a
        position's node has logit -inf, q is undefined there and the label falls back to
        the one-hot target.
        """
        cf_logits, targets = torch.as_tensor(cf_logits), torch.as_tensor(targets)
        self._check(cf_logits, targets, alpha, temperature)
        trie = self.trie
        z = cf_logits.detach().to("cpu")
        targets = targets.detach().to("cpu", torch.long)
        b, n = z.shape

        lengths = trie.lengths[targets]  # [B], title + EOS
        length = int(lengths.max())
        real = torch.arange(length) < lengths[:, None]  # [B, L]
        path = trie.item_path[targets, : length + 1]  # [B, L+1]: node of s_t[:k]; column m_b is the leaf
        nodes = torch.where(real, path[:, :length], -1)
        target_tokens = torch.where(real, trie.seqs[targets, :length], IGNORE_INDEX)

        real_positions = real.reshape(-1).nonzero().squeeze(1)  # [P]
        rows, kids = trie.children(nodes.reshape(-1)[real_positions])  # [E] each
        position = real_positions[rows]
        sample, step = position // length, position % length
        on_path = kids == path[:, 1:].reshape(-1)[position]  # the child the target goes through

        # Off-path children and the leaf tile each sample's sorted items: sorted by their
        # flat start b * N + range_start they are consecutive segments of the [B * N] row.
        leaf = path.gather(1, lengths[:, None]).squeeze(1)  # [B]
        off = ~on_path
        seg_start = torch.cat([sample[off] * n + trie.range_start[kids[off]],
                               torch.arange(b) * n + trie.range_start[leaf]])
        seg_start, seg_order = seg_start.sort()
        sorted_z = z.index_select(1, trie.order).double()
        if temperature != 1:
            sorted_z /= temperature
        seg_length = torch.diff(seg_start, append=seg_start.new_tensor([b * n]))
        sorted_mass = _contiguous_logsumexp(sorted_z.reshape(-1), seg_length)
        seg_mass = torch.empty_like(sorted_mass).scatter_(0, seg_order, sorted_mass)
        num_off = int(off.sum())
        off_mass, leaf_mass = seg_mass[:num_off], seg_mass[num_off:]

        # log mass(n_k) = logsumexp of the off-path children at k..m-1 and the leaf: a
        # reverse cumulative log-sum-exp along the path. [B, L+1], -inf past the leaf.
        below = torch.full((b, length + 1), -math.inf, dtype=torch.float64)
        below[:, :length] = segment_logsumexp(off_mass, position[off], b * length).view(b, length)
        below[torch.arange(b), lengths] = leaf_mass
        node_mass = below.flip(1).logcumsumexp(1).flip(1)

        child_mass = torch.empty(kids.shape, dtype=torch.float64)
        child_mass[off] = off_mass
        child_mass[on_path] = node_mass[sample[on_path], step[on_path] + 1]
        parent_mass = node_mass[sample, step]
        defined = torch.isfinite(parent_mass)
        q = torch.where(defined, torch.exp(child_mass - torch.where(defined, parent_mass, 0.0)),
                        on_path.double())
        weight = float(alpha) * q + (1.0 - float(alpha)) * on_path.double()
        return SoftLabels(targets=target_tokens, nodes=nodes, position=position, index=trie.token[kids],
                          weight=weight)

    # ---- persistence: the title tokens are stored, the trie is rebuilt on load ----------
    def save(self, path: str | Path) -> None:
        """Save atomically as safetensors (title token ids + EOS id)."""
        from tca4rec.io import atomic_save_tensors

        atomic_save_tensors(path, {"seqs": self.trie.seqs, "lengths": self.trie.lengths},
                            metadata={"eos_token_id": str(self.eos_token_id), "format": _FORMAT})

    @classmethod
    def load(cls, path: str | Path) -> "CollaborativeTokenizer":
        from safetensors import SafetensorError, safe_open

        if not Path(path).is_file():
            raise ConfigError(f"{path}: no such collaborative tokenizer file")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != _FORMAT:
                    raise ConfigError(f"{path}: not a tca4rec collaborative tokenizer file")
                seqs, lengths = f.get_tensor("seqs"), f.get_tensor("lengths")
        except SafetensorError as e:
            raise ConfigError(f"{path}: unreadable collaborative tokenizer file ({e})") from None
        return cls([row[: int(m) - 1].tolist() for row, m in zip(seqs, lengths)], int(meta["eos_token_id"]))
