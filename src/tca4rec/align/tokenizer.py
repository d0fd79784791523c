"""Collaborative Tokenizer: turn a CF model's item logits into sparse next-token soft labels.

For a target item t with token sequence s_t = title + EOS, position k sits at the trie
node n_k = s_t[:k]. The collaborative distribution there is a softmax over the items
below n_k, summed per next token (DESIGN.md, "Collaborative Tokenizer"):

    q(v | n_k) = mass(child(n_k, v)) / mass(n_k),   mass(n) = sum_{i in I(n)} exp(z_i / T)

and the label is y_k = (1 - alpha) onehot(s_tk) + alpha q(. | n_k). Its support is
children(n_k), so the labels are stored sparse: one entry per (position, child).

How masses are computed, for the whole batch at once, on the logits' device (CPU or GPU;
``CollaborativeTokenizer.to`` moves the trie):

- fast path: items sorted in trie order make every node a contiguous range, so with prefix
  sums C of exp((z - row max) / T) in float64, mass(n) = C[end(n)] - C[start(n)]: one
  gather, one exp and one cumsum per logit, rows in chunks so memory stays bounded. The
  exp runs in the logits' dtype (float32 for CF models): each term is exact to its dtype's
  precision and only sums of positive terms are formed, so the result matches float64
  to well under 1e-6. On a large catalog the costliest step is the gather into trie
  order (a random read per logit): logits that already come in trie order
  (``trie_order=True``; the CF item table permuted once, ``Signals.cf_signals``) skip it.
- exact path: the subtraction cancels where a node holds a tiny share of its row's total
  (a subtree 1e4 nats below the maximum, or all -inf). From the first such position of a
  sample on, masses are computed in log space: in trie order, the off-path children of
  n_k .. n_{m-1} plus the target's leaf are contiguous ranges that tile the range of n_k;
  one segment log-sum-exp over them (each segment stabilized by its own max, in float64)
  gives every off-path child's log-mass, and a path node's log-mass is a reverse
  cumulative log-sum-exp along the path. Its cost is the items below that first node.
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
CHUNK_ELEMENTS = 1 << 21  # logits per chunk of the fast path: 24 MB of work tensors (float32 terms + float64 sums)
# Largest label error the fast path may incur from cancellation in C[end] - C[start]. The
# float64 prefix sum of n terms errs by at most n * eps * total, so a position is computed
# exactly when its node's mass is below 4 * n * eps * total / CANCELLATION_TOLERANCE.
CANCELLATION_TOLERANCE = 1e-7


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


def contiguous_logsumexp(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
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


def check_cf_logits(cf_logits: torch.Tensor, num_items: int, temperature: float) -> None:
    """CF logits [B, num_items] of a float dtype and a positive finite temperature, or a ConfigError."""
    if not (isinstance(temperature, numbers.Real) and math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"temperature must be a positive finite number, got {temperature}")
    if cf_logits.ndim != 2 or cf_logits.shape[1] != num_items:
        raise ConfigError(f"cf_logits must have shape [B, {num_items}] (one column per item), "
                          f"got {list(cf_logits.shape)}")
    if not cf_logits.is_floating_point():
        raise ConfigError(f"cf_logits must be a float tensor, got {cf_logits.dtype}")


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
        check_cf_logits(cf_logits, self.num_items, temperature)
        if targets.ndim != 1 or targets.shape[0] != cf_logits.shape[0]:
            raise ConfigError(f"targets must have shape [{cf_logits.shape[0]}], got {list(targets.shape)}")
        if targets.is_floating_point() or targets.dtype == torch.bool:
            raise ConfigError(f"targets must be integer item columns, got {targets.dtype}")
        bad = (targets < 0) | (targets >= self.num_items)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise ConfigError(f"targets[{row}] = {int(targets[row])} is not an item column (0..{self.num_items - 1})")

    @property
    def device(self) -> torch.device:
        """Where the trie tensors live, and so where ``soft_labels`` computes."""
        return self.trie.device

    def to(self, device: torch.device | str) -> "CollaborativeTokenizer":
        """This tokenizer with its trie tensors on ``device`` (like ``Tensor.to``: self if already there)."""
        moved = self.trie.to(device)
        if moved is self.trie:
            return self
        tokenizer = object.__new__(CollaborativeTokenizer)
        tokenizer.trie = moved
        return tokenizer

    @torch.no_grad()
    def soft_labels(self, cf_logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.1,
                    temperature: float = 1.0, trie_order: bool = False) -> SoftLabels:
        """Soft labels y_k for each target's title + EOS, computed and returned on ``self.device``.

        cf_logits: [B, N] item logits (moved to ``self.device`` if elsewhere: CPU by default,
        so put the tokenizer where the logits live with ``.to``); targets: [B] item columns.
        ``trie_order``: column p of cf_logits is item ``trie.order[p]`` instead of item p
        (the same labels, without a gather). Where every item below a position's node has
        logit -inf, q is undefined there and the label falls back to the one-hot target.
        """
        cf_logits, targets = torch.as_tensor(cf_logits), torch.as_tensor(targets)
        self._check(cf_logits, targets, alpha, temperature)
        trie, device = self.trie, self.device
        z = cf_logits.detach().to(device)
        z = z if z.dtype == torch.float64 else z.float()
        targets = targets.detach().to(device, torch.long)
        b, n = z.shape
        peak = z.amax(1)  # [B]
        if b and not bool((peak < math.inf).all()):  # NaN and +inf propagate to the max
            raise ConfigError("cf_logits contain NaN or +inf (use -inf to rule an item out)")
        columns = None if trie_order else trie.order  # logit column of each trie position

        lengths = trie.lengths[targets]  # [B], title + EOS
        length = int(lengths.max())
        real = torch.arange(length, device=device) < lengths[:, None]  # [B, L]
        path = trie.item_path[targets, : length + 1]  # [B, L+1]: node of s_t[:k]; column m_b is the leaf
        nodes = torch.where(real, path[:, :length], -1)
        target_tokens = torch.where(real, trie.seqs[targets, :length], IGNORE_INDEX)

        real_positions = real.reshape(-1).nonzero().squeeze(1)  # [P]
        rows, kids = trie.children(nodes.reshape(-1)[real_positions])  # [E] each
        position = real_positions[rows]
        sample, step = position // length, position % length
        on_path = kids == path[:, 1:].reshape(-1)[position]  # the child the target goes through

        # Fast path: in trie order a node's children tile its range, so with C the prefix sums
        # of exp((z - row max) / T), mass(child i) = C[start(child i + 1)] - C[start(child i)]
        # (C[end(node)] after the last child). The difference cancels where a node holds a
        # tiny share of its row's total; such positions are computed exactly instead.
        node_of_position = nodes.reshape(-1).index_select(0, real_positions)  # [P]
        counts = trie.num_children.index_select(0, node_of_position)  # [P], >= 1 before the leaf
        end_at = torch.cumsum(counts, 0) + torch.arange(counts.numel(), device=device)  # [P] into the boundaries
        start_at = torch.arange(kids.numel(), device=device) + rows  # [E]
        boundary = torch.empty(kids.numel() + counts.numel(), dtype=torch.long, device=device)
        boundary[start_at] = trie.range_start.index_select(0, kids)
        boundary[end_at] = trie.range_end.index_select(0, node_of_position)
        boundary_row = torch.empty_like(boundary)
        boundary_row[start_at] = sample
        boundary_row[end_at] = real_positions // length
        prefix, total = self._prefix_sums(z, peak, columns, temperature, boundary_row, boundary)
        child_sum = prefix.index_select(0, start_at + 1) - prefix.index_select(0, start_at)
        parent_sum = (prefix.index_select(0, end_at) - prefix.index_select(0, end_at - counts)).index_select(0, rows)
        cancellation_bound = 4 * n * torch.finfo(torch.float64).eps / CANCELLATION_TOLERANCE
        ill_conditioned = parent_sum <= cancellation_bound * total.index_select(0, sample)
        # Masses shrink along the path: from a sample's first ill-conditioned position on, all are exact.
        exact_from = torch.full((b,), length, device=device).scatter_reduce(
            0, sample[ill_conditioned], step[ill_conditioned], reduce="amin")
        exact = step >= exact_from[sample]
        q = child_sum / parent_sum
        if bool(exact.any()):
            q = torch.where(exact, self._exact_q(z, columns, temperature, path, lengths, exact_from, position,
                                                 kids, on_path, length), q)
        weight = float(alpha) * q + (1.0 - float(alpha)) * on_path.double()
        return SoftLabels(targets=target_tokens, nodes=nodes, position=position, index=trie.token[kids],
                          weight=weight)

    def _prefix_sums(self, z: torch.Tensor, peak: torch.Tensor, columns: torch.Tensor | None, temperature: float,
                     query_row: torch.Tensor, query_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(C[query_row, query_pos], C[:, N]) in float64, where C[row, pos] sums exp((z - peak) / T)
        over the first ``pos`` items in trie order (z's ``columns`` in that order; None: z's own).

        Rows go in chunks of about CHUNK_ELEMENTS logits, so the extra memory is bounded
        whatever the catalog size. A row of -inf has max 0 and C = 0 everywhere.
        """
        b, n = z.shape
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        found = torch.zeros(query_row.shape, dtype=torch.float64, device=z.device)
        total = torch.empty(b, dtype=torch.float64, device=z.device)
        rows_per_chunk = max(1, CHUNK_ELEMENTS // n)
        for lo in range(0, b, rows_per_chunk):
            hi = min(b, lo + rows_per_chunk)
            if columns is None:
                terms = z[lo:hi] - peak[lo:hi, None]  # a new tensor: the caller's logits stay as they are
            else:
                terms = z[lo:hi].index_select(1, columns).sub_(peak[lo:hi, None])
            if temperature != 1:
                terms /= temperature
            cumulative = torch.cumsum(terms.exp_(), 1, dtype=torch.float64)  # [rows, n]: C[., pos + 1]
            total[lo:hi] = cumulative[:, -1]
            wanted = (query_row >= lo) & (query_row < hi) & (query_pos > 0)
            flat = ((query_row - lo) * n + query_pos - 1).clamp(0, cumulative.numel() - 1)
            found = torch.where(wanted, cumulative.view(-1).index_select(0, flat), found)
        return found, total

    def _exact_q(self, z: torch.Tensor, columns: torch.Tensor | None, temperature: float, path: torch.Tensor,
                 lengths: torch.Tensor, exact_from: torch.Tensor, position: torch.Tensor, kids: torch.Tensor,
                 on_path: torch.Tensor, length: int) -> torch.Tensor:
        """q for every label entry, exact (log space, float64) at steps >= ``exact_from[sample]``.

        In trie order, the off-path children of n_k .. n_{m-1} plus the target's leaf tile
        the range of n_k, so each sample's exact work covers only the items below its first
        exact node. One segment log-sum-exp over those segments gives every off-path
        child's log-mass; a path node's log-mass is the reverse cumulative log-sum-exp of
        what hangs below it along the path. Entries before ``exact_from`` get garbage.
        """
        trie, device = self.trie, z.device
        b, n = z.shape
        sample, step = position // length, position % length
        off = ~on_path & (step >= exact_from[sample])
        has_exact = exact_from < lengths
        leaf = path.gather(1, lengths[:, None]).squeeze(1)[has_exact]  # [S]
        seg_sample = torch.cat([sample[off], has_exact.nonzero().squeeze(1)])
        seg_node = torch.cat([kids[off], leaf])
        seg_start, seg_length = trie.range_start[seg_node], trie.range_end[seg_node] - trie.range_start[seg_node]
        # Every item of every segment: its row and trie-order position, segment after segment.
        member = torch.repeat_interleave(torch.arange(seg_node.numel(), device=device), seg_length)
        first = torch.cumsum(seg_length, 0) - seg_length
        sorted_pos = seg_start[member] + torch.arange(member.numel(), device=device) - first[member]
        values = z[seg_sample[member], sorted_pos if columns is None else columns[sorted_pos]].double()
        if temperature != 1:
            values /= temperature
        seg_mass = contiguous_logsumexp(values, seg_length)
        num_off = int(off.sum())
        off_mass, leaf_mass = seg_mass[:num_off], seg_mass[num_off:]

        below = torch.full((b, length + 1), -math.inf, dtype=torch.float64, device=device)
        below[:, :length] = segment_logsumexp(off_mass, position[off], b * length).view(b, length)
        below[has_exact.nonzero().squeeze(1), lengths[has_exact]] = leaf_mass
        node_mass = below.flip(1).logcumsumexp(1).flip(1)  # [B, L+1], log mass(n_k) for k >= exact_from

        child_mass = torch.full(kids.shape, -math.inf, dtype=torch.float64, device=device)
        child_mass[off] = off_mass
        child_mass[on_path] = node_mass[sample[on_path], step[on_path] + 1]
        parent_mass = node_mass[sample, step]
        defined = torch.isfinite(parent_mass)
        return torch.where(defined, torch.exp(child_mass - torch.where(defined, parent_mass, 0.0)),
                           on_path.double())

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
