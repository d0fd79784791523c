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
"""

from __future__ import annotations

import torch

from tca4rec.align.tokenizer import CANCELLATION_TOLERANCE, check_cf_logits, contiguous_logsumexp
from tca4rec.align.trie import TitleTrie
from tca4rec.errors import ConfigError


class CFGuide:
    """log share(node) of every (row, node) query for B rows of CF logits [B, N] (item columns).

    Lives on the CPU with the search's bookkeeping; the logits are copied there once per call.
    """

    def __init__(self, trie: TitleTrie, cf_logits: torch.Tensor, temperature: float = 1.0) -> None:
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
