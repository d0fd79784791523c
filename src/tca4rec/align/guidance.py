"""CF guidance for decoding: each trie node's share of a row's CF probability, per live beam.

CF-guided decoding (DESIGN.md, "CF-guided decoding") adds beta * log q(v | n) to every
token's score, q being the Collaborative Tokenizer's next-token distribution for the
row's CF logits z: q(v | n) = mass(child) / mass(n), mass(n) = sum_{i below n} exp(z_i / T).
Along a path the q's telescope, so what a beam needs at a candidate child c is

    log share(c) = log mass(c) - log mass(root) = sum of log q along the path to c,

and at a leaf that is log p_CF(title), identical titles merged. ``CFGuide`` precomputes per
row what makes each step two gathers (the same arithmetic as the soft labels' fast path):
the items in trie order make every node a contiguous range, so with prefix sums C of
exp((z - row max) / T) in float64, mass(c) = C[end(c)] - C[start(c)]. The difference
cancels where c holds a tiny share of its row's total; those candidates are recomputed
exactly in log space over their own range (``contiguous_logsumexp``, float64). The
candidates of one beam-search step are distinct nodes of one depth, so their ranges are
disjoint: the exact work of a step is at most the row's N items. A subtree whose items all
have logit -inf has share 0 (log share -inf): the search never enters it.

The share is what the telescoped q's give, but as the score of a partial beam it favours
prefixes with many items over the prefixes of the titles the CF model ranks first
(DESIGN.md). ``lookahead="max"`` scores a node by its most probable title instead:

    log max_{leaves l below n} p_CF(l),   p_CF(l) = mass(l) / mass(root)

(a leaf's mass sums the items sharing its title). It never increases along a path and equals
log p_CF(title) at a leaf, so finished titles rank as before and the early stop still
holds. Leaves, too, are contiguous in trie order and every node's leaves are a contiguous
run of them, so the maximum is a range-maximum query: a sparse table over each row's leaf
log-probabilities (level k holds the maxima of 2^k consecutive leaves; built in
O(F log F) per row for F leaves, float64), answered by two gathers per query.
"""

from __future__ import annotations

import torch

from tca4rec.align.tokenizer import CANCELLATION_TOLERANCE, check_cf_logits, contiguous_logsumexp
from tca4rec.align.trie import TitleTrie
from tca4rec.errors import ConfigError

CF_LOOKAHEADS = ("sum", "max")  # how a partial beam's CF part is scored: subtree share, or best title below
# Chosen on valid rows (docs/cf-guided-decoding-lookahead.md): on the first 200 Office_Products
# valid rows, tallrec guided by SASRec, max reached NDCG@10 0.1158 at its tuned beta, sum 0.1127.
DEFAULT_CF_LOOKAHEAD = "max"


def check_lookahead(lookahead: str) -> str:
    """``lookahead`` if it is one of ``CF_LOOKAHEADS``; a ConfigError otherwise."""
    if lookahead not in CF_LOOKAHEADS:
        raise ConfigError(f"cf_lookahead {lookahead!r}: choose 'sum' (a prefix's CF share) or "
                          "'max' (the CF probability of its most probable title)")
    return lookahead


class CFGuide:
    """log share(node) and log max(node) of every (row, node) query for B rows of CF logits [B, N].

    Lives on the CPU with the search's bookkeeping; the logits are copied there once per call.
    ``lookahead`` picks what ``log_bound`` (a partial beam's CF part) returns; the range-maximum
    table is built only for "max".
    """

    def __init__(self, trie: TitleTrie, cf_logits: torch.Tensor, temperature: float = 1.0,
                 lookahead: str = DEFAULT_CF_LOOKAHEAD) -> None:
        self.lookahead = check_lookahead(lookahead)
        check_cf_logits(cf_logits, trie.num_items, temperature)
        z = cf_logits.detach().to("cpu", torch.float64) / float(temperature)
        if bool(torch.isnan(z).any()) or bool(torch.isposinf(z).any()):
            raise ConfigError("cf_logits contain NaN or +inf (use -inf to rule an item out)")
        peak = z.amax(1)
        if not bool(torch.isfinite(peak).all()):
            row = int((~torch.isfinite(peak)).nonzero()[0, 0])
            raise ConfigError(f"cf_logits row {row} is -inf for every item: the CF model rules out the whole catalog")
        self.trie = trie.to("cpu")
        self.sorted_logits = (z - peak[:, None]).index_select(1, self.trie.order)  # [B, N], max 0 per row
        prefix = torch.zeros(z.shape[0], z.shape[1] + 1, dtype=torch.float64)
        torch.cumsum(self.sorted_logits.exp(), 1, out=prefix[:, 1:])
        self.prefix = prefix  # [B, N + 1]: C[row, p] = sum of the first p terms in trie order
        self.log_total = prefix[:, -1].log()  # [B]
        # C[end] - C[start] errs by at most ~n * eps * total (float64 cumsum of n positive terms).
        self.exact_below = 4 * z.shape[1] * torch.finfo(torch.float64).eps / CANCELLATION_TOLERANCE
        if lookahead == "max":
            self._build_leaf_maxima()

    def _build_leaf_maxima(self) -> None:
        """The sparse table of leaf log-probabilities that ``log_max`` reads."""
        rows, items = self.sorted_logits.shape
        is_leaf = self.trie.is_leaf(torch.arange(self.trie.num_nodes))
        self.leaf_start = torch.sort(self.trie.range_start[is_leaf]).values  # [F]: leaves in trie order
        sizes = torch.diff(self.leaf_start, append=torch.tensor([items]))  # [F]: items sharing each title
        level = self.sorted_logits[:, self.leaf_start]  # [B, F]: exact for a title of one item (most)
        shared = (sizes > 1).nonzero().squeeze(1)  # [S]: titles of several items, whose masses add up
        if shared.numel():
            lengths = sizes[shared]
            first = (torch.cumsum(lengths, 0) - lengths).repeat_interleave(lengths)
            within = torch.arange(int(lengths.sum())) - first  # each item's place in its title
            values = self.sorted_logits[:, self.leaf_start[shared].repeat_interleave(lengths) + within]  # [B, sum]
            # log-sum-exp per title in float64; -inf when all its items are ruled out.
            level[:, shared] = contiguous_logsumexp(values.reshape(-1), lengths.repeat(rows)).view(rows, -1)
        level -= self.log_total[:, None]  # log p_CF of each title
        # Level k holds the maxima of leaves [p, p + 2^k): [B, F - 2^k + 1], flat in one table.
        leaves = level.shape[1]
        self.level_width = torch.tensor([leaves - (1 << k) + 1 for k in range(leaves.bit_length())])
        cells = rows * self.level_width
        self.level_offset = torch.cumsum(cells, 0) - cells  # where each level starts in ``table``
        self.table = torch.empty(int(cells.sum()), dtype=torch.float64)
        views = [self.table[int(o):int(o + c)].view(rows, -1) for o, c in zip(self.level_offset, cells)]
        views[0].copy_(level)
        for k in range(1, len(views)):
            half = 1 << (k - 1)
            torch.maximum(views[k - 1][:, :-half], views[k - 1][:, half:], out=views[k])

    @property
    def num_rows(self) -> int:
        return int(self.prefix.shape[0])

    def log_share(self, rows: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """Float64 log share of ``nodes[c]`` in row ``rows[c]``'s CF probability; -inf for zero mass."""
        start, end = self.trie.range_start[nodes], self.trie.range_end[nodes]
        width = self.prefix.shape[1]
        flat = self.prefix.view(-1)
        mass = flat[rows * width + end] - flat[rows * width + start]
        share = mass / self.prefix[rows, -1]
        log_share = share.log()
        exact = (share <= self.exact_below).nonzero().squeeze(1)
        if exact.numel():
            lengths = (end - start)[exact]
            member = torch.repeat_interleave(torch.arange(exact.numel()), lengths)
            offset = torch.arange(member.numel()) - (torch.cumsum(lengths, 0) - lengths)[member]
            values = self.sorted_logits[rows[exact][member], start[exact][member] + offset]
            log_share[exact] = contiguous_logsumexp(values, lengths) - self.log_total[rows[exact]]
        return log_share

    def log_max(self, rows: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """Float64 log p_CF of the most probable title below ``nodes[c]`` in row ``rows[c]``; -inf for
        zero mass. Needs ``lookahead="max"`` (which builds the table)."""
        if self.lookahead != "max":
            raise ConfigError('CFGuide.log_max needs a guide built with lookahead="max"')
        first = torch.searchsorted(self.leaf_start, self.trie.range_start[nodes])  # [C]: the node's leaves
        end = torch.searchsorted(self.leaf_start, self.trie.range_end[nodes])  # are [first, end), never empty
        level = torch.frexp((end - first).double()).exponent.long() - 1  # floor(log2(count))
        base = self.level_offset[level] + rows * self.level_width[level]
        # Two windows of 2^level leaves, one from each end, cover the run exactly (they may overlap).
        return torch.maximum(self.table[base + first], self.table[base + end - (1 << level)])

    def log_bound(self, rows: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """A partial beam's CF part at ``nodes`` (by ``lookahead``): an upper bound on log p_CF of every
        title below, exact at a leaf, never increasing along a path."""
        return self.log_max(rows, nodes) if self.lookahead == "max" else self.log_share(rows, nodes)
