"""Constrained beam search against exhaustive teacher forcing of every title, plus its invariants."""

from __future__ import annotations

import pytest
import torch

from tca4rec.align.trie import TitleTrie
from tca4rec.decode import BeamSearchConfig, constrained_beam_search
from tca4rec.errors import ConfigError
from tca4rec.llm.prompts import left_pad


def exhaustive_top_k(scores: list[float], title_ids: list[list[int]], k: int, lengths_normalize: bool = False):
    """Reference ranking: one entry per distinct title (its smallest column), best first."""
    best: dict[tuple[int, ...], tuple[float, int]] = {}
    for column, (score, title) in enumerate(zip(scores, title_ids)):
        if lengths_normalize:
            score = score / (len(title) + 1)
        best.setdefault(tuple(title), (score, column))
    ranked = sorted(best.values(), key=lambda sc: -sc[0])
    gaps = [a[0] - b[0] for a, b in zip(ranked, ranked[1:])]
    assert min(gaps) > 1e-4, "near-tie in the reference ranking: the test would depend on rounding"
    return [c for _, c in ranked[:k]], [s for s, _ in ranked[:k]]


def prompt_embeds_of(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model.get_input_embeddings()(torch.tensor(ids))


@pytest.mark.parametrize("masked,tau", [(False, 1.0), (True, 1.0), (True, 4.5)])
def test_exact_when_beams_cover_the_catalog(tiny_lm, tokenizer, toy_title_ids, prompt_ids,
                                            reference_scores, masked, tau):
    eos = tokenizer.eos_token_id
    trie = TitleTrie(toy_title_ids, eos)
    distinct = len({tuple(t) for t in toy_title_ids})  # 17 of 20
    ids, mask = left_pad(prompt_ids, tokenizer.pad_token_id)
    scores = [reference_scores(tiny_lm, prompt_embeds_of(tiny_lm, p), toy_title_ids, eos, masked, tau)
              for p in prompt_ids]
    # top_k < catalog exercises the early stop; top_k = 20 > 17 titles, the -1 padding.
    beam_rows = {}
    for top_k in (5, 20):
        config = BeamSearchConfig(num_beams=20, top_k=top_k, masked=masked, tau=tau)
        result = constrained_beam_search(tiny_lm, trie, mask, input_ids=ids, config=config)
        beam_rows[top_k] = result.beam_rows
        assert result.items.shape == (len(prompt_ids), top_k)
        for r in range(len(prompt_ids)):
            items, expected = exhaustive_top_k(scores[r], toy_title_ids, top_k)
            n = min(top_k, distinct)
            assert result.items[r, :n].tolist() == items
            torch.testing.assert_close(result.scores[r, :n].double(), torch.tensor(expected, dtype=torch.float64),
                                       atol=1e-4, rtol=1e-6)
            assert (result.items[r, n:] == -1).all() and torch.isneginf(result.scores[r, n:]).all()
    # A beam that cannot beat the 5th finished title is dropped: fewer rows run through the model.
    assert beam_rows[5] < beam_rows[20]


@pytest.mark.parametrize("masked", [False, True])
def test_exact_with_inputs_embeds(tiny_lm, tokenizer, toy_title_ids, prompt_ids, reference_scores, masked):
    """The LLaRA host feeds embeddings with CF vectors injected: perturb some prompt rows."""
    eos = tokenizer.eos_token_id
    trie = TitleTrie(toy_title_ids, eos)
    gen = torch.Generator().manual_seed(0)
    embeds = [prompt_embeds_of(tiny_lm, p) for p in prompt_ids]
    for e in embeds:
        e[len(e) // 2] += torch.randn(e.shape[1], generator=gen) * 0.05
    width = max(len(e) for e in embeds)
    batch = torch.zeros(len(embeds), width, embeds[0].shape[1])
    mask = torch.zeros(len(embeds), width, dtype=torch.long)
    for r, e in enumerate(embeds):
        batch[r, width - len(e):] = e
        mask[r, width - len(e):] = 1
    config = BeamSearchConfig(num_beams=20, top_k=8, masked=masked, tau=2.0)
    result = constrained_beam_search(tiny_lm, trie, mask, inputs_embeds=batch, config=config)
    for r, e in enumerate(embeds):
        scores = reference_scores(tiny_lm, e, toy_title_ids, eos, masked, 2.0)
        items, expected = exhaustive_top_k(scores, toy_title_ids, 8)
        assert result.items[r].tolist() == items
        torch.testing.assert_close(result.scores[r].double(), torch.tensor(expected, dtype=torch.float64),
                                   atol=1e-4, rtol=1e-6)


def test_length_normalization_ranks_by_mean_log_prob(tiny_lm, tokenizer, toy_title_ids, prompt_ids,
                                                      reference_scores):
    eos = tokenizer.eos_token_id
    trie = TitleTrie(toy_title_ids, eos)
    ids, mask = left_pad(prompt_ids[:2], tokenizer.pad_token_id)
    config = BeamSearchConfig(num_beams=20, top_k=6, length_normalize=True)
    result = constrained_beam_search(tiny_lm, trie, mask, input_ids=ids, config=config)
    for r, prompt in enumerate(prompt_ids[:2]):
        scores = reference_scores(tiny_lm, prompt_embeds_of(tiny_lm, prompt), toy_title_ids, eos)
        items, expected = exhaustive_top_k(scores, toy_title_ids, 6, lengths_normalize=True)
        assert result.items[r].tolist() == items
        torch.testing.assert_close(result.scores[r].double(), torch.tensor(expected, dtype=torch.float64),
                                   atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("masked", [False, True])
def test_small_beams_give_real_distinct_items_independent_of_padding(tiny_lm, tokenizer, big_title_ids, prompt_ids,
                                                                     reference_scores, masked):
    eos = tokenizer.eos_token_id
    trie = TitleTrie(big_title_ids, eos)
    config = BeamSearchConfig(num_beams=4, top_k=3, masked=masked, tau=1.5)
    ids, mask = left_pad(prompt_ids, tokenizer.pad_token_id)
    batched = constrained_beam_search(tiny_lm, trie, mask, input_ids=ids, config=config)
    assert (batched.items >= 0).all()
    for r, prompt in enumerate(prompt_ids):
        items = batched.items[r]
        assert len(set(items.tolist())) == 3
        assert (batched.scores[r, :-1] >= batched.scores[r, 1:]).all()
        # Each returned score is that item's exact score (the beam only decides which items).
        scores = reference_scores(tiny_lm, prompt_embeds_of(tiny_lm, prompt), big_title_ids, eos, masked, 1.5)
        torch.testing.assert_close(batched.scores[r].double(), torch.tensor(scores, dtype=torch.float64)[items],
                                   atol=1e-4, rtol=1e-6)
        alone = constrained_beam_search(tiny_lm, trie, torch.ones(1, len(prompt), dtype=torch.long),
                                        input_ids=torch.tensor([prompt]), config=config)
        assert alone.items[0].tolist() == items.tolist()
        torch.testing.assert_close(alone.scores[0], batched.scores[r], atol=1e-5, rtol=1e-6)


def test_returns_model_to_training_mode(tiny_lm, tokenizer, toy_title_ids, prompt_ids):
    trie = TitleTrie(toy_title_ids, tokenizer.eos_token_id)
    tiny_lm.train()
    try:
        constrained_beam_search(tiny_lm, trie, torch.ones(1, len(prompt_ids[0]), dtype=torch.long),
                                input_ids=torch.tensor(prompt_ids[:1]), config=BeamSearchConfig(num_beams=2, top_k=1))
        assert tiny_lm.training
    finally:
        tiny_lm.eval()


@pytest.mark.parametrize("kwargs", [dict(num_beams=0), dict(num_beams=3, top_k=4), dict(top_k=0), dict(tau=0.0)])
def test_bad_config_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        BeamSearchConfig(**kwargs)


def test_bad_inputs_are_config_errors(tiny_lm, tokenizer, toy_title_ids):
    trie = TitleTrie(toy_title_ids, tokenizer.eos_token_id)
    ids = torch.tensor([[5, 6, 7], [5, 6, 7]])
    right_padded = torch.tensor([[1, 1, 1], [1, 1, 0]])
    with pytest.raises(ConfigError, match="left-padded"):
        constrained_beam_search(tiny_lm, trie, right_padded, input_ids=ids)
    with pytest.raises(ConfigError, match="exactly one"):
        constrained_beam_search(tiny_lm, trie, torch.ones_like(ids), input_ids=ids,
                                inputs_embeds=torch.zeros(2, 3, 64))
    with pytest.raises(ConfigError, match=r"\[B, P\]"):
        constrained_beam_search(tiny_lm, trie, torch.ones(2, 4, dtype=torch.long), input_ids=ids)
    foreign = TitleTrie([[len(tokenizer) + 5]], tokenizer.eos_token_id)
    with pytest.raises(ConfigError, match="vocabulary"):
        constrained_beam_search(tiny_lm, foreign, torch.ones_like(ids), input_ids=ids)


def test_exact_through_a_peft_lora_model(tiny_llm_dir, tokenizer, toy_title_ids, prompt_ids, reference_scores):
    """Fine-tuned hosts decode through a PeftModel: calls, cache and lm_head must go through it."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(1)
    base = LlamaForCausalLM.from_pretrained(tiny_llm_dir, dtype=torch.float32)
    with torch.no_grad():
        base.model.norm.weight.mul_(8.0)
    # init_lora_weights=False: random non-zero adapters, so that LoRA changes the scores.
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False)).eval()
    eos = tokenizer.eos_token_id
    trie = TitleTrie(toy_title_ids, eos)
    prompt = prompt_ids[0]
    with torch.no_grad():
        embeds = model.get_input_embeddings()(torch.tensor(prompt))
    for masked in (False, True):
        scores = reference_scores(model, embeds, toy_title_ids, eos, masked, 2.0)
        items, expected = exhaustive_top_k(scores, toy_title_ids, 6)
        config = BeamSearchConfig(num_beams=20, top_k=6, masked=masked, tau=2.0)
        result = constrained_beam_search(model, trie, torch.ones(1, len(prompt), dtype=torch.long),
                                         input_ids=torch.tensor([prompt]), config=config)
        assert result.items[0].tolist() == items
        torch.testing.assert_close(result.scores[0].double(), torch.tensor(expected, dtype=torch.float64),
                                   atol=1e-4, rtol=1e-6)


def test_masked_search_applies_the_models_logit_soft_capping(tokenizer, toy_title_ids, prompt_ids, reference_scores):
    """Gemma 2 caps its logits after the output layer; the masked search, which evaluates that
    layer itself at the allowed tokens, must cap them too to match the model's own logits."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16, initializer_range=0.5,
                          final_logit_softcapping=3.0, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    model = Gemma2ForCausalLM(config).eval()
    eos = tokenizer.eos_token_id
    ids, mask = left_pad(prompt_ids, tokenizer.pad_token_id)
    result = constrained_beam_search(model, TitleTrie(toy_title_ids, eos), mask, input_ids=ids,
                                     config=BeamSearchConfig(num_beams=20, top_k=5, masked=True, tau=0.5))
    for r, p in enumerate(prompt_ids):
        scores = reference_scores(model, prompt_embeds_of(model, p), toy_title_ids, eos, True, 0.5)
        items, expected = exhaustive_top_k(scores, toy_title_ids, 5)
        assert result.items[r].tolist() == items
        torch.testing.assert_close(result.scores[r].double(), torch.tensor(expected, dtype=torch.float64),
                                   atol=1e-4, rtol=1e-6)


def test_forced_chains_follow_single_children(tokenizer, toy_title_ids):
    from tca4rec.decode.beam import forced_chains

    trie = TitleTrie(toy_title_ids, tokenizer.eos_token_id)
    nodes = torch.arange(1, trie.num_nodes)
    nodes = nodes[~trie.is_leaf(nodes)][::3]  # some inner nodes

    def slow_chain(node: int) -> list[int]:  # the node, then each only child that is not an EOS leaf
        chain = [node]
        while int(trie.num_children[chain[-1]]) == 1 and not bool(trie.is_leaf(trie.first_child[chain[-1]])):
            chain.append(int(trie.first_child[chain[-1]]))
        return chain

    expected = [slow_chain(int(n)) for n in nodes]
    assert any(len(c) > 1 for c in expected) and any(len(c) == 1 for c in expected)
    flat, owner = forced_chains(trie, nodes)
    assert flat.tolist() == [n for c in expected for n in c]
    assert owner.tolist() == [i for i, c in enumerate(expected) for _ in c]
