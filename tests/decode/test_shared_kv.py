"""Beams sharing their prompt's KV (``SharedPromptCache``, the default) against the search with
the prompt cache copied per beam and against exhaustive teacher forcing, on tiny random models
of every attention flavour the search meets: grouped-query heads, absolute positions, sliding
windows shorter than the prompt, attention logit soft-capping; the ancestry bookkeeping
against a slow list-based reference; and the explicit fallback to the copied cache."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tca4rec.align.trie import TitleTrie
from tca4rec.decode import BeamSearchConfig, constrained_beam_search
from tca4rec.decode.shared_kv import SharedPromptCache, shared_kv_unsupported
from tca4rec.errors import ConfigError
from tca4rec.llm.prompts import left_pad

from .test_beam import exhaustive_top_k, prompt_embeds_of
from .test_guided import cf_logits_for, guided_top_k

WINDOW = 6  # shorter than every test prompt (19-37 tokens): sliding layers must drop early keys


def tiny_causal_lm(arch: str, tokenizer):
    """A 2-layer random model of ``arch`` over the default tokenizer, weights large enough for
    peaked logits (no near-ties in the reference rankings)."""
    import transformers as tf

    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
               bos_token_id=tokenizer.bos_token_id, initializer_range=0.5)
    body = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=512)
    configs = {
        "llama": lambda: tf.LlamaConfig(**body, num_key_value_heads=2, **ids),
        "qwen2_sliding": lambda: tf.Qwen2Config(**body, num_key_value_heads=2, use_sliding_window=True,
                                                sliding_window=WINDOW, max_window_layers=1, **ids),
        "mistral_sliding": lambda: tf.MistralConfig(**body, num_key_value_heads=1, sliding_window=WINDOW, **ids),
        "gemma2_softcap": lambda: tf.Gemma2Config(**body, num_key_value_heads=2, head_dim=8, sliding_window=WINDOW,
                                                  attn_logit_softcapping=2.0, final_logit_softcapping=5.0, **ids),
        "gemma3": lambda: tf.Gemma3TextConfig(**body, num_key_value_heads=2, head_dim=8, sliding_window=WINDOW,
                                              layer_types=["sliding_attention", "full_attention"], **ids),
        "phi3": lambda: tf.Phi3Config(**body, num_key_value_heads=4, **ids),
        "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=512, **ids),
        "gpt_neox": lambda: tf.GPTNeoXConfig(**body, **ids),
        "opt": lambda: tf.OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                                    word_embed_proj_dim=32, max_position_embeddings=512, **{
                                        k: v for k, v in ids.items() if k != "initializer_range"}, init_std=0.5),
    }
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(configs[arch]())
    return model.eval()


ARCHS = ["llama", "qwen2_sliding", "mistral_sliding", "gemma2_softcap", "gemma3", "phi3", "gpt2", "gpt_neox", "opt"]


@pytest.fixture(scope="module")
def zoo(tokenizer) -> dict:
    return {arch: tiny_causal_lm(arch, tokenizer) for arch in ARCHS}


def assert_same_search(shared, copied) -> None:
    assert shared.shared_prompt_kv and not copied.shared_prompt_kv
    assert torch.equal(shared.items, copied.items)
    torch.testing.assert_close(shared.scores, copied.scores, atol=1e-4, rtol=1e-5)
    assert (shared.steps, shared.beam_rows) == (copied.steps, copied.beam_rows)


@pytest.mark.parametrize("arch", ARCHS)
def test_shared_prompt_kv_matches_teacher_forcing_and_the_copied_cache(zoo, arch, tokenizer, toy_title_ids, prompt_ids,
                                                                       reference_scores):
    model, eos = zoo[arch], tokenizer.eos_token_id
    trie = TitleTrie(toy_title_ids, eos)
    ids, mask = left_pad(prompt_ids, tokenizer.pad_token_id)  # three lengths: left padding in the batch
    implementation = model.config._attn_implementation
    for masked, tau in ((False, 1.0), (True, 2.0)):
        found = {share: constrained_beam_search(model, trie, mask, input_ids=ids, config=BeamSearchConfig(
            num_beams=20, top_k=6, masked=masked, tau=tau, share_prompt_kv=share)) for share in (True, False)}
        assert_same_search(found[True], found[False])
        assert found[True].forwards < found[False].forwards  # forced tokens fed ahead
        for r, prompt in enumerate(prompt_ids):
            scores = reference_scores(model, prompt_embeds_of(model, prompt), toy_title_ids, eos, masked, tau)
            items, expected = exhaustive_top_k(scores, toy_title_ids, 6)
            assert found[True].items[r].tolist() == items
            torch.testing.assert_close(found[True].scores[r].double(), torch.tensor(expected, dtype=torch.float64),
                                       atol=1e-4, rtol=1e-6)
    assert model.config._attn_implementation == implementation  # switched for the decoding steps only


@pytest.mark.parametrize("arch", ["llama", "gemma2_softcap"])
def test_narrow_cf_guided_beams_match_the_copied_cache(zoo, arch, tokenizer, big_title_ids, toy_title_ids, prompt_ids,
                                                      reference_scores):
    """Few beams: rows lose beams at different steps (empty slots), beams reorder every step."""
    model, eos = zoo[arch], tokenizer.eos_token_id
    ids, mask = left_pad(prompt_ids, tokenizer.pad_token_id)
    trie = TitleTrie(big_title_ids, eos)
    z = torch.randn(len(prompt_ids), len(big_title_ids), generator=torch.Generator().manual_seed(5)) * 2
    for masked in (False, True):
        found = {share: constrained_beam_search(model, trie, mask, input_ids=ids, cf_logits=z, config=BeamSearchConfig(
            num_beams=3, top_k=2, masked=masked, tau=1.5, beta=0.7, share_prompt_kv=share)) for share in (True, False)}
        assert_same_search(found[True], found[False])
    # Exhaustive with guidance: LLM + beta * log p_CF of every title.
    z = cf_logits_for(toy_title_ids, len(prompt_ids), seed=2)
    result = constrained_beam_search(model, TitleTrie(toy_title_ids, eos), mask, input_ids=ids, cf_logits=z,
                                     config=BeamSearchConfig(num_beams=20, top_k=8, beta=1.5))
    for r, prompt in enumerate(prompt_ids):
        llm = reference_scores(model, prompt_embeds_of(model, prompt), toy_title_ids, eos)
        items, expected = guided_top_k(llm, z[r], toy_title_ids, 1.5, 8)
        assert result.items[r].tolist() == items
        torch.testing.assert_close(result.scores[r].double(), torch.tensor(expected, dtype=torch.float64),
                                   atol=1e-4, rtol=1e-6)


@pytest.mark.parametrize("masked", [False, True])
def test_lookahead_runs_fewer_forwards_for_the_same_search(tiny_lm, tokenizer, toy_title_ids, prompt_ids, masked):
    """Forced tokens fed ahead change how often the model runs, never what the search finds."""
    trie = TitleTrie(toy_title_ids, tokenizer.eos_token_id)
    ids, mask = left_pad(prompt_ids, tokenizer.pad_token_id)
    found = {lookahead: constrained_beam_search(tiny_lm, trie, mask, input_ids=ids, config=BeamSearchConfig(
        num_beams=20, top_k=20, masked=masked, tau=2.0, lookahead=lookahead)) for lookahead in (False, True)}
    copied = constrained_beam_search(tiny_lm, trie, mask, input_ids=ids, config=BeamSearchConfig(
        num_beams=20, top_k=20, masked=masked, tau=2.0, share_prompt_kv=False))
    for result in found.values():
        assert_same_search(result, copied)
    assert copied.forwards == found[False].forwards == copied.steps  # one forward per step
    assert copied.fed_tokens == found[False].fed_tokens == copied.beam_rows  # one token per beam and step
    assert found[True].forwards < found[False].forwards  # chains of the toy titles run ahead


def test_searches_from_several_threads_on_one_model_take_turns(tiny_lm, tokenizer, toy_title_ids, prompt_ids):
    """A search switches the model's attention for its steps: a search in another thread must
    not run its prefill through the switched attention (the serve batcher decodes in a thread)."""
    trie = TitleTrie(toy_title_ids, tokenizer.eos_token_id)
    ids, mask = left_pad(prompt_ids, tokenizer.pad_token_id)
    config = BeamSearchConfig(num_beams=20, top_k=6)
    alone = constrained_beam_search(tiny_lm, trie, mask, input_ids=ids, config=config)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: constrained_beam_search(tiny_lm, trie, mask, input_ids=ids, config=config),
                                range(16)))
    for result in results:
        assert torch.equal(result.items, alone.items) and torch.equal(result.scores, alone.scores)


def test_fed_tokens_see_their_prompt_ancestors_and_chain(tokenizer):
    """Random beams, parents and fed chains, against list bookkeeping: each fed token sees exactly
    its row's prompt, its beam's earlier tokens and its chain up to itself, sits in the next free
    slot of its row, and a sliding window drops what lies too far back in token positions."""
    gen = torch.Generator().manual_seed(0)
    prompt_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])
    cache = SharedPromptCache()
    cache.update(torch.zeros(3, 1, 5, 2), torch.zeros(3, 1, 5, 2), 0)  # a one-layer prefill
    cache.start(prompt_mask)
    key_position = {r: {k: k - int((prompt_mask[r] == 0).sum()) for k in range(5)} for r in range(3)}
    samples, paths, filled = torch.arange(3), [[], [], []], [0, 0, 0]  # paths: generated slots seen per beam
    for step in range(40):  # past the first allocation of 64 slots: the buffers grow
        counts = torch.randint(0, 5, (3,), generator=gen) * torch.isin(torch.arange(3), samples)
        counts[int(samples[0])] = max(1, int(counts[int(samples[0])]))  # some row goes on
        new_samples = torch.arange(3).repeat_interleave(counts)  # grouped by row
        parents = torch.stack([torch.nonzero(samples == s).flatten()[
            torch.randint(0, int((samples == s).sum()), (1,), generator=gen)][0] for s in new_samples.tolist()])
        cache.select(parents, new_samples)
        paths = [list(paths[p]) for p in parents.tolist()]
        lengths = torch.randint(0, 4, (new_samples.numel(),), generator=gen)  # 0: scored ahead, feeds nothing
        lengths[0] = max(1, int(lengths[0]))
        owner = torch.arange(new_samples.numel()).repeat_interleave(lengths)
        chain_index = torch.cat([torch.arange(int(n)) for n in lengths])
        positions = prompt_mask.sum(1)[new_samples[owner]] + step + chain_index
        cache.feed(owner, chain_index, positions)
        visible, near = cache.mask(None, 1)[:, 0], cache.mask(2, 1)[:, 0]  # [B, Q, used]
        rank_in_row = [int((new_samples[owner[:f]] == new_samples[owner[f]]).sum()) for f in range(owner.numel())]
        slots = [filled[int(new_samples[b])] + q for b, q in zip(owner.tolist(), rank_in_row)]
        for f, (b, i) in enumerate(zip(owner.tolist(), chain_index.tolist())):
            row = int(new_samples[b])
            key_position[row][5 + slots[f]] = int(positions[f])
            assert (int(cache.write_row[f]), int(cache.write_position[f])) == (row, 5 + slots[f])
        for f, (b, i) in enumerate(zip(owner.tolist(), chain_index.tolist())):
            row = int(new_samples[b])
            chain = [slots[g] for g in range(owner.numel()) if owner[g] == b and chain_index[g] <= i]
            expected = torch.zeros(cache.used, dtype=torch.bool)
            expected[:5] = prompt_mask[row].bool()
            expected[[5 + k for k in paths[b] + chain]] = True
            assert torch.equal(visible[row, rank_in_row[f]], expected)
            close = torch.tensor([int(positions[f]) - key_position[row].get(k, -99) < 2 for k in range(cache.used)])
            assert torch.equal(near[row, rank_in_row[f]], expected & close)
        for f, b in enumerate(owner.tolist()):
            paths[b].append(slots[f])
            filled[int(new_samples[b])] += 1
        samples = new_samples
    assert cache.capacity > 64


def test_model_without_attention_interface_falls_back_to_copies(tiny_lm_own_attention, tiny_lm, tokenizer,
                                                                toy_title_ids, prompt_ids):
    model = tiny_lm_own_attention
    assert "AttentionInterface" in shared_kv_unsupported(model) and shared_kv_unsupported(tiny_lm) is None
    trie = TitleTrie(toy_title_ids, tokenizer.eos_token_id)
    ids, mask = left_pad(prompt_ids, tokenizer.pad_token_id)
    config = BeamSearchConfig(num_beams=5, top_k=3)
    fallback = constrained_beam_search(model, trie, mask, input_ids=ids, config=config)
    shared = constrained_beam_search(tiny_lm, trie, mask, input_ids=ids, config=config)  # the same weights
    assert not fallback.shared_prompt_kv and shared.shared_prompt_kv
    assert torch.equal(fallback.items, shared.items)
    torch.testing.assert_close(fallback.scores, shared.scores, atol=1e-4, rtol=1e-5)


def test_attention_outside_the_interface_is_caught(tiny_llm_dir, tokenizer, toy_title_ids, prompt_ids):
    """A model that claims the interface but computes one layer's attention itself would silently
    ignore the prompt: the search refuses, and the model keeps its attention implementation."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_llm_dir, dtype=torch.float32).eval()
    attention = model.model.layers[1].self_attn
    own_config = type(model.config).from_dict(model.config.to_dict())
    own_config._attn_implementation = "sdpa"

    class Frozen:  # a config view that always answers "sdpa": the layer bypasses the switch
        def __getattr__(self, name):
            return "sdpa" if name == "_attn_implementation" else getattr(own_config, name)

    attention.config = Frozen()
    trie = TitleTrie(toy_title_ids, tokenizer.eos_token_id)
    # One prompt, one beam: the layer's own attention runs without a shape error (and is wrong).
    ids, mask = torch.tensor(prompt_ids[:1]), torch.ones(1, len(prompt_ids[0]), dtype=torch.long)
    with pytest.raises(ConfigError, match="share_prompt_kv=False"):
        constrained_beam_search(model, trie, mask, input_ids=ids, config=BeamSearchConfig(num_beams=1, top_k=1))
    assert model.config._attn_implementation == "sdpa"


def test_cache_refuses_misuse():
    cache = SharedPromptCache()
    cache.update(torch.zeros(2, 1, 3, 2), torch.zeros(2, 1, 3, 2), 0)
    cache.start(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ConfigError, match="grouped by row"):
        cache.select(torch.tensor([1, 0]), torch.tensor([1, 0]))
    cache.select(torch.tensor([0, 1]), torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="grouped by beam"):
        cache.feed(torch.tensor([1, 0]), torch.tensor([0, 0]), torch.tensor([3, 3]))
    cache.feed(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), torch.tensor([3, 3, 4]))
    assert cache.get_seq_length() == 3 + 2  # the prompt and row 1's two slots
