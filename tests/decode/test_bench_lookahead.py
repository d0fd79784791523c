"""``tca4rec bench lookahead``: the CF-only search and its recall of the CF model's own top titles."""

from __future__ import annotations

import math

import pytest
import torch

from tca4rec.align.trie import TitleTrie
from tca4rec.bench.lookahead import cf_only_beam_search, cf_top_titles, top_k_recall
from tca4rec.cli import main


def catalog(seed: int) -> list[list[int]]:
    """300 titles over 6 tokens (deep shared prefixes), 40 of them twice."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 7, (300,), generator=gen)
    titles = [torch.randint(1, 7, (int(n),), generator=gen).tolist() for n in lengths]
    return titles + titles[:40]


@pytest.mark.parametrize("seed", range(3))
def test_max_finds_the_top_k_with_k_beams_and_sum_does_not_always(seed):
    trie = TitleTrie(catalog(seed), eos_token_id=0)
    z = torch.randn(8, trie.num_items, generator=torch.Generator().manual_seed(seed)) * 2
    z[:, 40:80] = -math.inf  # ruled out: a title without CF mass is never returned
    assert torch.equal(top_k_recall(trie, z, width=10, k=10, lookahead="max"), torch.ones(8, dtype=torch.float64))
    assert top_k_recall(trie, z, width=10, k=10, lookahead="sum").mean() < 1
    for lookahead in ("sum", "max"):
        for row, leaves in enumerate(cf_only_beam_search(trie, z, 10, lookahead)):
            assert all(torch.isfinite(z[row, trie.items_at(int(leaf))]).any() for leaf in leaves)


def test_a_beam_as_wide_as_the_catalog_finds_every_title_in_cf_order():
    trie = TitleTrie(catalog(5), eos_token_id=0)
    z = torch.randn(2, trie.num_items, generator=torch.Generator().manual_seed(1))
    titles = int(trie.is_leaf(torch.arange(trie.num_nodes)).sum())
    exact = cf_top_titles(trie, z, titles)
    for lookahead in ("sum", "max"):
        assert torch.equal(cf_only_beam_search(trie, z, titles, lookahead), exact)


def test_test_rows_are_refused(synth_dir, capsys):
    assert main(["bench", "lookahead", "--data", str(synth_dir), "--cf-run", "x", "--split", "test"]) == 2
    assert "never on test rows" in capsys.readouterr().err
