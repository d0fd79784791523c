"""CFGuide's per-node CF shares and subtree maxima against brute force over each node's items
(float64 logsumexp per title, then the sum or the max)."""

from __future__ import annotations

import math

import pytest
import torch

from tca4rec.align.guidance import CFGuide, check_lookahead
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


def brute_log_max(trie: TitleTrie, z: torch.Tensor, node: int) -> float:
    """log p_CF of the most probable title below ``node``: items grouped by leaf, summed, then the max."""
    items = trie.items_at(node)
    leaves = trie.leaf_of(items)
    log_p = torch.log_softmax(z.double(), 0)
    return max(float(torch.logsumexp(log_p[items[leaves == leaf]], 0)) for leaf in leaves.unique())


def random_logits(gen: torch.Generator, rows: int, items: int) -> torch.Tensor:
    """Row 0 plain, row 1 with items far below the max, row 2 with ruled-out items."""
    z = torch.randn(rows, items, generator=gen, dtype=torch.float64) * 3
    z[1, torch.randperm(items, generator=gen)[: items // 3]] -= 1e4
    z[2, torch.randperm(items, generator=gen)[: items // 2]] = -math.inf
    return z.float()


@pytest.mark.parametrize("seed", range(4))
def test_every_nodes_max_matches_brute_force_with_duplicates_and_excluded_items(seed):
    gen = torch.Generator().manual_seed(seed)
    titles = random_catalog(gen, 80, 5)
    titles += [titles[int(j)] for j in torch.randint(0, 80, (15,), generator=gen)]  # duplicated titles
    trie = TitleTrie(titles, eos_token_id=0)
    z = random_logits(gen, 3, trie.num_items)
    guide = CFGuide(trie, z, lookahead="max")
    nodes = torch.arange(trie.num_nodes)
    leaf = trie.is_leaf(nodes)
    assert int(leaf.sum()) < trie.num_items  # some titles are shared
    for row in range(3):
        rows = torch.full_like(nodes, row)
        got = guide.log_max(rows, nodes)
        expected = torch.tensor([brute_log_max(trie, z[row], int(n)) for n in nodes], dtype=torch.float64)
        assert torch.equal(torch.isfinite(got), torch.isfinite(expected))
        finite = torch.isfinite(expected)
        torch.testing.assert_close(got[finite], expected[finite], atol=1e-9, rtol=0)
        # At a leaf the bound is the title's probability, as the share is; above, max <= share.
        share = guide.log_share(rows, nodes)
        torch.testing.assert_close(got[leaf & finite], share[leaf & finite], atol=1e-9, rtol=0)
        assert bool((got[finite] <= share[finite] + 1e-9).all())
        assert torch.equal(guide.log_bound(rows, nodes), got)


def test_max_never_increases_along_a_path():
    gen = torch.Generator().manual_seed(7)
    trie = TitleTrie(random_catalog(gen, 200, 4), eos_token_id=0)
    guide = CFGuide(trie, random_logits(gen, 3, trie.num_items), lookahead="max")
    child = torch.arange(1, trie.num_nodes)
    for row in range(3):
        rows = torch.full_like(child, row)
        below, above = guide.log_max(rows, child), guide.log_max(rows, trie.parent[child])
        assert bool((below <= above).all())
        assert bool((below == above).any()) and bool((below < above).any())


def test_lookahead_is_validated():
    trie = TitleTrie([[1], [2]], eos_token_id=0)
    assert check_lookahead("max") == "max"
    with pytest.raises(ConfigError, match="cf_lookahead 'mean'.*'sum'.*'max'"):
        CFGuide(trie, torch.zeros(1, 2), lookahead="mean")
    with pytest.raises(ConfigError, match="lookahead=\"max\""):
        zero = torch.zeros(1, dtype=torch.long)
        CFGuide(trie, torch.zeros(1, 2), lookahead="sum").log_max(zero, zero)


def test_leaf_shares_are_title_probabilities_with_duplicates_merged():
    trie = TitleTrie([[1, 2], [1, 2], [1, 3], [4]], eos_token_id=0)
    z = torch.tensor([[0.0, math.log(2.0), math.log(3.0), -math.inf]])
    leaves = trie.leaf_of(torch.arange(4))
    for lookahead in ("sum", "max"):
        got = CFGuide(trie, z, lookahead=lookahead).log_bound(torch.zeros(4, dtype=torch.long), leaves).exp()
        torch.testing.assert_close(got, torch.tensor([0.5, 0.5, 0.5, 0.0], dtype=torch.float64))
    # The root's best title is [1, 2] (two items: 1/6 + 2/6), not the single most probable item [1, 3].
    root = torch.zeros(1, dtype=torch.long)
    assert CFGuide(trie, z, lookahead="max").log_max(root, root).exp().item() == pytest.approx(0.5)


def test_bad_logits_are_config_errors():
    trie = TitleTrie([[1], [2]], eos_token_id=0)
    with pytest.raises(ConfigError, match="shape"):
        CFGuide(trie, torch.zeros(1, 3))
    with pytest.raises(ConfigError, match="NaN"):
        CFGuide(trie, torch.tensor([[0.0, math.nan]]))
    with pytest.raises(ConfigError, match="row 1"):
        CFGuide(trie, torch.tensor([[0.0, 1.0], [-math.inf, -math.inf]]))
