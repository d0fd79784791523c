"""CFGuide's per-node CF shares against brute force over each node's items (float64 logsumexp)."""

from __future__ import annotations

import math

import pytest
import torch

from tca4rec.align.guidance import CFGuide
from tca4rec.align.trie import TitleTrie
from tca4rec.errors import ConfigError


def random_catalog(gen: torch.Generator, items: int, vocab: int) -> list[list[int]]:
    """Titles over a small vocabulary (many shared prefixes, some duplicates)."""
    lengths = torch.randint(1, 5, (items,), generator=gen)
    return [torch.randint(1, vocab, (int(n),), generator=gen).tolist() for n in lengths]


def brute_log_share(trie: TitleTrie, z: torch.Tensor, node: int) -> float:
    items = trie.items_at(node)
    return float(torch.logsumexp(z[items].double(), 0) - torch.logsumexp(z.double(), 0))


@pytest.mark.parametrize("seed", range(4))
def test_every_node_matches_brute_force_with_extreme_and_excluded_logits(seed):
    gen = torch.Generator().manual_seed(seed)
    trie = TitleTrie(random_catalog(gen, 60, 6), eos_token_id=0)
    z = torch.randn(3, trie.num_items, generator=gen, dtype=torch.float64) * 3
    z[1, torch.randperm(trie.num_items, generator=gen)[:20]] -= 1e4  # subtrees far below the row's max
    z[2, torch.randperm(trie.num_items, generator=gen)[:25]] = -math.inf  # ruled-out items
    guide = CFGuide(trie, z.float())
    nodes = torch.arange(trie.num_nodes)
    for row in range(3):
        got = guide.log_share(torch.full_like(nodes, row), nodes)
        expected = torch.tensor([brute_log_share(trie, z[row].float(), int(n)) for n in nodes], dtype=torch.float64)
        finite = torch.isfinite(expected)
        assert torch.equal(torch.isfinite(got), finite)
        torch.testing.assert_close(got[finite], expected[finite], atol=1e-6, rtol=0)
    assert guide.log_share(torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long)).item() == pytest.approx(0)


def test_leaf_shares_are_title_probabilities_with_duplicates_merged():
    trie = TitleTrie([[1, 2], [1, 2], [1, 3], [4]], eos_token_id=0)
    z = torch.tensor([[0.0, math.log(2.0), math.log(3.0), -math.inf]])
    guide = CFGuide(trie, z)
    leaves = trie.leaf_of(torch.arange(4))
    got = guide.log_share(torch.zeros(4, dtype=torch.long), leaves).exp()
    torch.testing.assert_close(got, torch.tensor([0.5, 0.5, 0.5, 0.0], dtype=torch.float64))


def test_bad_logits_are_config_errors():
    trie = TitleTrie([[1], [2]], eos_token_id=0)
    with pytest.raises(ConfigError, match="shape"):
        CFGuide(trie, torch.zeros(1, 3))
    with pytest.raises(ConfigError, match="NaN"):
        CFGuide(trie, torch.tensor([[0.0, math.nan]]))
    with pytest.raises(ConfigError, match="row 1"):
        CFGuide(trie, torch.tensor([[0.0, 1.0], [-math.inf, -math.inf]]))
