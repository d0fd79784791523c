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
  gather, one exp and one cumsum per logit, rows in chunks so memory stays bounded. Only
  sums of positive terms are formed, so the one error to watch is cancellation in the
  difference (below). The root's children are the same for every sample and hold most of
  the entries (91% on Toys_and_Games): they are one dense [B, R] gather of C, the other
  positions one entry per (position, child). On a large catalog the costliest step is the
  gather into trie order (a random read per logit): logits that already come in trie order
  (``trie_order=True``; the CF item table permuted once, ``Signals.cf_signals``) skip it.
- exact path: the subtraction cancels where a node holds a tiny share of its row's total:
  a float64 sum of positive terms errs by at most (terms - 1) * eps / 2 of its value, so q
  at a node [start, end) errs by at most 2 eps end C[end] / mass(node). Where that could
  exceed CANCELLATION_TOLERANCE (deep nodes of a few items, a subtree 1e4 nats below the
  maximum, all -inf), masses are computed in log space from the first such position of a
  sample on: in trie order, the off-path children of n_k .. n_{m-1} plus the target's leaf
  are contiguous ranges that tile the range of n_k; one segment log-sum-exp over them (each
  segment stabilized by its own max, in float64) gives every off-path child's log-mass,
  and a path node's log-mass is a reverse cumulative log-sum-exp along the path. Its cost
  is the items below that first node.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from tca4rec.align.trie import ROOT, TitleTrie
from tca4rec.errors import ConfigError
from tca4rec.io import atomic_save_tensors

IGNORE_INDEX = -100  # target-token padding, as in torch's cross-entropy

_FORMAT = "tca4rec.CollaborativeTokenizer/1"
CHUNK_ELEMENTS = 1 << 21  # logits per chunk of the fast path: 24 MB of work tensors (float32 terms + float64 sums)
# Largest error of q the fast path may incur from cancellation in C[end] - C[start]; a
# position whose error bound exceeds it is computed exactly.
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
        At alpha 0 the labels are the one-hot target and the logits' values are not read (their
        shape and dtype are still checked), so a broadcast zero column does.
        """
        cf_logits, targets = torch.as_tensor(cf_logits), torch.as_tensor(targets)
        self._check(cf_logits, targets, alpha, temperature)
        trie, device = self.trie, self.device
        z = cf_logits.detach().to(device)
        z = z if z.dtype == torch.float64 else z.float()
        targets = targets.detach().to(device, torch.long)
        b, n = z.shape
        columns = None if trie_order else trie.order  # logit column of each trie position

        lengths = trie.lengths.index_select(0, targets)  # [B], title + EOS
        length = int(lengths.max())
        real = torch.arange(length, device=device) < lengths[:, None]  # [B, L]
        path = trie.item_path.index_select(0, targets)[:, : length + 1]  # [B, L+1]: node of s_t[:k]; column m_b is the leaf
        nodes = torch.where(real, path[:, :length], -1)
        target_tokens = torch.where(real, trie.seqs.index_select(0, targets)[:, :length], IGNORE_INDEX)

        # The root (k = 0) has the same R children for every sample: most of the entries on a
        # title catalog (91% on Toys_and_Games), so they form one dense [B, R] block. The other
        # positions (k >= 1) have one entry per (position, child of its node).
        num_root = int(trie.num_children[ROOT])
        root_ends = trie.range_end[1 : num_root + 1]  # [R]: breadth-first numbering puts the root's children at 1..R
        real_positions = (real & (torch.arange(length, device=device) > 0)).view(-1).nonzero().squeeze(1)  # [P]
        node_of_position = nodes.view(-1).index_select(0, real_positions)  # [P]
        sample_of_position = real_positions // length  # [P]
        rows, kids = trie.children(node_of_position)  # [E] each
        position = real_positions.index_select(0, rows)
        on_path = kids == path[:, 1:].reshape(-1).index_select(0, position)  # the child the target goes through

        root_onehot = torch.zeros(b, num_root, dtype=torch.float64, device=device).scatter_(
            1, path[:, 1:2] - 1, 1.0)  # [B, R]: the root's child the target goes through
        root_position = (torch.arange(b, device=device) * length)[:, None].expand(b, num_root)

        def labels(root_weight: torch.Tensor, weight: torch.Tensor) -> SoftLabels:  # [B, R], [E]
            return SoftLabels(targets=target_tokens, nodes=nodes,
                              position=torch.cat([root_position.reshape(-1), position]),
                              index=torch.cat([trie.token[1 : num_root + 1].repeat(b),
                                               trie.token.index_select(0, kids)]),
                              weight=torch.cat([root_weight.reshape(-1), weight]))

        if alpha == 0:  # the one-hot target: no pass over the logits
            return labels(root_onehot, on_path.double())
        peak = z.amax(1)  # [B]
        if b and not bool((peak < math.inf).all()):  # NaN and +inf propagate to the max
            raise ConfigError("cf_logits contain NaN or +inf (use -inf to rule an item out)")
        # In trie order every node is a range [start, end), so with C the prefix sums of
        # exp((z - row max) / T), mass(node) = C[end] - C[start], and the root's children tile
        # [0, N). The difference cancels where a node holds a tiny share of its row's total;
        # such positions are computed exactly instead.
        e, p = kids.numel(), real_positions.numel()
        bounds = torch.cat([trie.range_start.index_select(0, kids), trie.range_end.index_select(0, kids),
                            trie.range_start.index_select(0, node_of_position),
                            trie.range_end.index_select(0, node_of_position)])  # [2E + 2P]
        sample = sample_of_position.index_select(0, rows)
        prefix, root_prefix = self._prefix_sums(z, peak, columns, temperature,
                                                torch.cat([sample, sample, sample_of_position, sample_of_position]),
                                                bounds, root_ends)
        total = root_prefix[:, -1]  # [B] = C[N]

        root_mass = torch.diff(root_prefix, dim=1, prepend=torch.zeros_like(root_prefix[:, :1]))
        # A row of -inf has total 0: q is undefined there and the label is the one-hot target.
        root_q = torch.where(total[:, None] > 0, root_mass / total[:, None], root_onehot)
        root_weight = float(alpha) * root_q + (1.0 - float(alpha)) * root_onehot

        child_sum = prefix[e: 2 * e] - prefix[:e]  # [E]
        # A float64 sum of positive terms errs by at most (terms - 1) * eps / 2 of its value, so
        # C[pos] by at most pos * eps / 2 * C[pos]; with every bound of the parent [start, end)
        # and of its children at most end, q = child / parent errs by at most 2 eps end C[end] / parent.
        end_sum = prefix[2 * e + p:]
        parent_sum = end_sum - prefix[2 * e: 2 * e + p]  # [P]
        error_bound = 2 * torch.finfo(torch.float64).eps * bounds[2 * e + p:] * end_sum
        ill_conditioned = parent_sum * CANCELLATION_TOLERANCE <= error_bound  # [P]
        q = child_sum / parent_sum.index_select(0, rows)
        if bool(ill_conditioned.any()):
            # Masses shrink along the path: from a sample's first ill-conditioned position on, all are exact.
            step_of_position = real_positions % length
            exact_from = torch.full((b,), length, device=device).scatter_reduce(
                0, sample_of_position[ill_conditioned], step_of_position[ill_conditioned], reduce="amin")
            step = step_of_position.index_select(0, rows)
            exact = (step >= exact_from.index_select(0, sample)).nonzero().squeeze(1)  # entries
            q[exact] = self._exact_q(z, columns, temperature, path, lengths, exact_from, sample[exact], step[exact],
                                     kids[exact], on_path[exact])
        return labels(root_weight, float(alpha) * q + (1.0 - float(alpha)) * on_path.double())

    def _prefix_sums(self, z: torch.Tensor, peak: torch.Tensor, columns: torch.Tensor | None, temperature: float,
                     query_row: torch.Tensor, query_pos: torch.Tensor,
                     dense_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(C[query_row, query_pos], C[:, dense_pos]) in float64, where C[row, pos] sums exp((z - peak) / T)
        over the first ``pos`` items in trie order (z's ``columns`` in that order; None: z's own).
        ``dense_pos`` must be positive.

        Rows go in chunks of about CHUNK_ELEMENTS logits, so the extra memory is bounded
        whatever the catalog size. A row of -inf has max 0 and C = 0 everywhere.
        """
        b, n = z.shape
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        found = torch.zeros(query_row.shape, dtype=torch.float64, device=z.device)
        dense = torch.empty(b, dense_pos.numel(), dtype=torch.float64, device=z.device)
        rows_per_chunk = max(1, CHUNK_ELEMENTS // n)
        nonzero = query_pos > 0  # C[., 0] = 0 is not stored
        for lo in range(0, b, rows_per_chunk):
            hi = min(b, lo + rows_per_chunk)
            if columns is None:
                terms = z[lo:hi] - peak[lo:hi, None]  # a new tensor: the caller's logits stay as they are
            else:
                terms = z[lo:hi].index_select(1, columns).sub_(peak[lo:hi, None])
            if temperature != 1:
                terms /= temperature
            # exp in the logits' dtype, sums in float64; in place: a fresh multi-megabyte tensor costs page faults
            cumulative = terms.exp_().double().cumsum_(1)  # [rows, n]: C[., pos + 1]
            dense[lo:hi] = cumulative.index_select(1, dense_pos - 1)
            wanted = nonzero if hi - lo == b else nonzero & (query_row >= lo) & (query_row < hi)
            flat = ((query_row - lo) * n + query_pos - 1).clamp_(0, cumulative.numel() - 1)
            found = torch.where(wanted, cumulative.view(-1).index_select(0, flat), found)
        return found, dense

    def _exact_q(self, z: torch.Tensor, columns: torch.Tensor | None, temperature: float, path: torch.Tensor,
                 lengths: torch.Tensor, exact_from: torch.Tensor, sample: torch.Tensor, step: torch.Tensor,
                 kids: torch.Tensor, on_path: torch.Tensor) -> torch.Tensor:
        """q, exact (log space, float64), for the entries (sample, step, child, on path) [X] of every
        position at ``step >= exact_from[sample]`` (all of them, for each sample that has any).

        In trie order, the off-path children of n_k .. n_{m-1} plus the target's leaf tile
        the range of n_k, so each sample's exact work covers only the items below its first
        exact node. One log-sum-exp per such child gives its log-mass; a path node's log-mass
        is the reverse cumulative log-sum-exp of what hangs below it along the path.
        """
        trie, device = self.trie, z.device
        b, n = z.shape
        width = path.shape[1]  # L + 1
        off = ~on_path
        with_leaf = (exact_from < lengths).nonzero().squeeze(1)  # samples with exact positions
        seg_sample = torch.cat([sample[off], with_leaf])
        seg_step = torch.cat([step[off], lengths[with_leaf]])  # a leaf sits one step past the last position
        seg_node = torch.cat([kids[off], path[with_leaf, lengths[with_leaf]]])
        seg_start = trie.range_start.index_select(0, seg_node)
        seg_length = trie.range_end.index_select(0, seg_node) - seg_start
        # Every item of every segment, segment after segment: its row and trie-order position.
        member = torch.repeat_interleave(seg_length)
        sorted_pos = (seg_start - torch.cumsum(seg_length, 0) + seg_length)[member] + torch.arange(
            member.numel(), device=device)
        values = z[seg_sample[member], sorted_pos if columns is None else columns[sorted_pos]].double()
        if temperature != 1:
            values /= temperature
        seg_mass = contiguous_logsumexp(values, seg_length)  # [S]: off-path children, then leaves
        below = segment_logsumexp(seg_mass, seg_sample * width + seg_step, b * width)  # [B * (L+1)]
        node_mass = below.view(b, width).flip(1).logcumsumexp(1).flip(1).view(-1)  # log mass(n_k), k >= exact_from

        node = sample * width + step
        child_mass = torch.where(on_path, node_mass.index_select(0, node + 1),
                                 torch.zeros(on_path.shape, dtype=torch.float64, device=device).masked_scatter_(off, seg_mass))
        parent_mass = node_mass.index_select(0, node)
        defined = torch.isfinite(parent_mass)
        return torch.where(defined, torch.exp(child_mass - torch.where(defined, parent_mass, 0.0)),
                           on_path.double())

    # ---- persistence: the title tokens are stored, the trie is rebuilt on load ----------
    def save(self, path: str | Path) -> None:
        """Save atomically as safetensors (title token ids + EOS id)."""
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
