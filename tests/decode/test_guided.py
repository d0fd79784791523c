"""CF-guided beam search (beta > 0) against brute force: every title scored by teacher forcing
plus beta * log p_CF(title), p_CF summed over the items sharing the title; and what the lookahead
(a partial beam's CF part: subtree sum or subtree max) changes."""

from __future__ import annotations

import math

import pytest
import torch

from tca4rec.align.trie import TitleTrie
from tca4rec.decode import BeamSearchConfig, constrained_beam_search
from tca4rec.errors import ConfigError
from tca4rec.llm.prompts import left_pad


def prompt_embeds_of(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model.get_input_embeddings()(torch.tensor(ids))


def title_log_probs(z: torch.Tensor, title_ids: list[list[int]]) -> dict[tuple[int, ...], float]:
    """log p_CF of each distinct title: log sum of softmax(z) over its items (slow, obvious)."""
    log_p = torch.log_softmax(z.double(), 0)
    merged: dict[tuple[int, ...], list[float]] = {}
    for column, title in enumerate(title_ids):
        merged.setdefault(tuple(title), []).append(float(log_p[column]))
    return {t: float(torch.logsumexp(torch.tensor(v, dtype=torch.float64), 0)) for t, v in merged.items()}


def guided_top_k(llm: list[float], z: torch.Tensor, title_ids: list[list[int]], beta: float, k: int):
    """Reference ranking by log p_LLM + beta * log p_CF, one entry per title with CF mass (smallest column)."""
    cf = title_log_probs(z, title_ids)
    best: dict[tuple[int, ...], tuple[float, int]] = {}
    for column, (score, title) in enumerate(zip(llm, title_ids)):
        if cf[tuple(title)] > -math.inf:
            best.setdefault(tuple(title), (score + beta * cf[tuple(title)], column))
    ranked = sorted(best.values(), key=lambda sc: -sc[0])
    assert min(a[0] - b[0] for a, b in zip(ranked, ranked[1:])) > 1e-4, "near-tie in the reference"
    return [c for _, c in ranked[:k]], [s for s, _ in ranked[:k]]


def cf_logits_for(title_ids: list[list[int]], rows: int, seed: int) -> torch.Tensor:
    """Random logits; the first duplicate of each duplicated title and one whole title ruled out."""
    z = torch.randn(rows, len(title_ids), generator=torch.Generator().manual_seed(seed)) * 2
    seen: dict[tuple[int, ...], int] = {}
    for column, title in enumerate(title_ids):
        if tuple(title) in seen:
            z[:, seen[tuple(title)]] = -math.inf  # its twin keeps the title alive
        seen[tuple(title)] = column
    z[:, -1] = -math.inf  # "Rubik's Cube": a unique title, so it has no CF mass at all
    return z


@pytest.mark.parametrize("lookahead", ["sum", "max"])
@pytest.mark.parametrize("masked,tau", [(False, 1.0), (True, 4.5)])
@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_exhaustive_beam_ranks_by_llm_plus_beta_cf(tiny_lm, tokenizer, toy_title_ids, prompt_ids,
                                                   reference_scores, masked, tau, beta, lookahead):
    eos = tokenizer.eos_token_id
    trie = TitleTrie(toy_title_ids, eos)
    ids, mask = left_pad(prompt_ids, tokenizer.pad_token_id)
    z = cf_logits_for(toy_title_ids, len(prompt_ids), seed=int(beta * 10))
    config = BeamSearchConfig(num_beams=20, top_k=20, masked=masked, tau=tau, beta=beta, cf_lookahead=lookahead)
    result = constrained_beam_search(tiny_lm, trie, mask, input_ids=ids, config=config, cf_logits=z)
    for r, prompt in enumerate(prompt_ids):
        llm = reference_scores(tiny_lm, prompt_embeds_of(tiny_lm, prompt), toy_title_ids, eos, masked, tau)
        items, expected = guided_top_k(llm, z[r], toy_title_ids, beta, 20)
        n = len(items)
        assert n == len({tuple(t) for t in toy_title_ids}) - 1  # every title but the one without CF mass
        assert result.items[r, :n].tolist() == items
        torch.testing.assert_close(result.scores[r, :n].double(), torch.tensor(expected, dtype=torch.float64),
                                   atol=1e-4, rtol=1e-6)
        assert (result.items[r, n:] == -1).all()


@pytest.mark.parametrize("lookahead", ["sum", "max"])
def test_beta_zero_is_plain_decoding_bit_for_bit(tiny_lm, tokenizer, big_title_ids, prompt_ids, lookahead):
    trie = TitleTrie(big_title_ids, tokenizer.eos_token_id)
    ids, mask = left_pad(prompt_ids, tokenizer.pad_token_id)
    for masked in (False, True):
        plain = constrained_beam_search(tiny_lm, trie, mask, input_ids=ids,
                                        config=BeamSearchConfig(num_beams=4, top_k=3, masked=masked))
        config = BeamSearchConfig(num_beams=4, top_k=3, masked=masked, beta=0.0, cf_lookahead=lookahead)
        zero = constrained_beam_search(tiny_lm, trie, mask, input_ids=ids, config=config,
                                       cf_logits=torch.randn(3, len(big_title_ids)))
        assert torch.equal(plain.items, zero.items) and torch.equal(plain.scores, zero.scores)
        assert (plain.steps, plain.beam_rows) == (zero.steps, zero.beam_rows)


def test_large_beta_gives_the_cf_models_top_titles(tiny_lm, tokenizer, big_title_ids, prompt_ids):
    trie = TitleTrie(big_title_ids, tokenizer.eos_token_id)
    ids, mask = left_pad(prompt_ids, tokenizer.pad_token_id)
    z = torch.randn(len(prompt_ids), len(big_title_ids), generator=torch.Generator().manual_seed(3)) * 2
    config = BeamSearchConfig(num_beams=10, top_k=5, beta=1e4)
    result = constrained_beam_search(tiny_lm, trie, mask, input_ids=ids, config=config, cf_logits=z)
    for r in range(len(prompt_ids)):
        cf_order = torch.argsort(z[r], descending=True)[:5]  # 36 distinct titles: items = titles
        assert result.items[r].tolist() == cf_order.tolist()


def cf_top_titles(z: torch.Tensor, title_ids: list[list[int]], k: int) -> list[int]:
    """The CF model's own top-k titles (probabilities summed per title), each as its smallest column."""
    cf = title_log_probs(z, title_ids)
    first = {}
    for column, title in enumerate(title_ids):
        first.setdefault(tuple(title), column)
    ranked = sorted(cf, key=lambda t: -cf[t])
    assert cf[ranked[k - 1]] - cf[ranked[k]] > 1e-3, "near-tie at rank k in the reference"
    return [first[t] for t in ranked[:k]]


@pytest.mark.parametrize("duplicates", [False, True])
def test_max_lookahead_finds_the_cf_models_top_k_with_k_beams(tiny_lm, tokenizer, big_title_ids, prompt_ids,
                                                              duplicates):
    """With width k and a dominant CF term, max finds exactly the CF model's top-k titles."""
    k = 5
    titles = big_title_ids + (big_title_ids[::3] if duplicates else [])  # 12 titles twice
    trie = TitleTrie(titles, tokenizer.eos_token_id)
    ids, mask = left_pad(prompt_ids, tokenizer.pad_token_id)
    z = torch.randn(len(prompt_ids), len(titles), generator=torch.Generator().manual_seed(5)) * 2
    config = BeamSearchConfig(num_beams=k, top_k=k, beta=1e6, cf_lookahead="max")
    result = constrained_beam_search(tiny_lm, trie, mask, input_ids=ids, config=config, cf_logits=z)
    promoted = 0  # rows where a title ranks in the top k only thanks to its twin's probability
    for r in range(len(prompt_ids)):
        expected = cf_top_titles(z[r], titles, k)
        assert result.items[r].tolist() == expected
        promoted += not set(expected) <= set(torch.argsort(z[r], descending=True)[:k].tolist())
    assert promoted == (len(prompt_ids) if duplicates else 0)


def test_sum_lookahead_follows_the_heaviest_brand_max_the_best_title(tiny_lm, tokenizer, big_title_ids, prompt_ids):
    """One beam: six good LEGO items outweigh one better Crayola item under sum, not under max."""
    trie = TitleTrie(big_title_ids, tokenizer.eos_token_id)
    ids, mask = left_pad(prompt_ids[:1], tokenizer.pad_token_id)
    z = torch.zeros(1, len(big_title_ids))
    z[0, :6] = 1.0  # "LEGO ..." (six things per brand): mass 6e = 16.3 against e^2 + 5 = 12.4 for Crayola
    z[0, 35] = 2.0  # "Crayola Board Game": the CF model's top title
    top = {}
    for lookahead in ("sum", "max"):
        config = BeamSearchConfig(num_beams=1, top_k=1, beta=1e6, cf_lookahead=lookahead)
        top[lookahead] = constrained_beam_search(tiny_lm, trie, mask, input_ids=ids, config=config,
                                                 cf_logits=z).items[0, 0].item()
    assert top["max"] == 35
    assert 0 <= top["sum"] < 6


@pytest.mark.parametrize("lookahead", ["sum", "max"])
def test_zero_mass_subtree_is_never_entered(tiny_lm, tokenizer, big_title_ids, prompt_ids, lookahead):
    """Every title of the first brand ruled out: none is returned, and fewer beam rows run."""
    trie = TitleTrie(big_title_ids, tokenizer.eos_token_id)
    ids, mask = left_pad(prompt_ids[:1], tokenizer.pad_token_id)
    z = torch.zeros(1, len(big_title_ids))
    z[0, :6] = -math.inf  # "LEGO ..." (6 things per brand)
    config = BeamSearchConfig(num_beams=36, top_k=36, beta=1.0, cf_lookahead=lookahead)
    result = constrained_beam_search(tiny_lm, trie, mask, input_ids=ids, config=config, cf_logits=z)
    assert sorted(result.items[0, :30].tolist()) == list(range(6, 36))
    assert (result.items[0, 30:] == -1).all()
    everything = constrained_beam_search(tiny_lm, trie, mask, input_ids=ids, config=config,
                                         cf_logits=torch.zeros(1, len(big_title_ids)))
    assert result.beam_rows < everything.beam_rows


def test_guidance_errors_name_the_problem(tiny_lm, tokenizer, big_title_ids, prompt_ids):
    trie = TitleTrie(big_title_ids, tokenizer.eos_token_id)
    ids, mask = left_pad(prompt_ids[:2], tokenizer.pad_token_id)
    with pytest.raises(ConfigError, match="cf_logits"):
        constrained_beam_search(tiny_lm, trie, mask, input_ids=ids, config=BeamSearchConfig(beta=1.0))
    with pytest.raises(ConfigError, match="3 rows for 2 prompts"):
        constrained_beam_search(tiny_lm, trie, mask, input_ids=ids, config=BeamSearchConfig(beta=1.0),
                                cf_logits=torch.zeros(3, len(big_title_ids)))
    with pytest.raises(ConfigError, match="beta"):
        BeamSearchConfig(beta=-1.0)
    with pytest.raises(ConfigError, match="cf_lookahead 'best'"):
        BeamSearchConfig(beta=1.0, cf_lookahead="best")
