"""Agreement with Hugging Face ``generate`` + ``prefix_allowed_tokens_fn`` (how earlier LLM
recommenders decode), on the tiny model, 10 beams.

With ``length_penalty=0`` and ``early_stopping=False``, HF ranks hypotheses by the plain
sum of log-probs and stops once no live beam can beat its 10th finished one: the same
objective. One rule differs: HF admits a finished title only if its EOS candidate ranks
among the top ``num_beams`` of the ``2 * num_beams`` candidates of that step, and drops it
otherwise even when fewer than 10 better titles were ever found; here every finished title
enters the pool of the best 10. So our list can only be better: the k-th score is >= HF's
k-th score, and every HF title that scores above our 10th is in our list.
"""

from __future__ import annotations

import torch

from tca4rec.align.trie import TitleTrie
from tca4rec.bench.decode import next_tokens_by_prefix
from tca4rec.decode import BeamSearchConfig, constrained_beam_search
from tca4rec.llm.prompts import left_pad


def test_same_items_as_hf_generate_where_both_are_exact(tiny_lm, tokenizer, big_title_ids, prompt_ids,
                                                         reference_scores):
    eos = tokenizer.eos_token_id
    trie = TitleTrie(big_title_ids, eos)
    allowed = next_tokens_by_prefix(big_title_ids, eos)
    column = {}
    for j, title in enumerate(big_title_ids):
        column.setdefault(tuple(title), j)
    ids, mask = left_pad(prompt_ids, tokenizer.pad_token_id)
    width = ids.shape[1]

    out = tiny_lm.generate(
        input_ids=ids, attention_mask=mask, num_beams=10, num_return_sequences=10, do_sample=False,
        prefix_allowed_tokens_fn=lambda _, seq: allowed.get(tuple(seq[width:].tolist()), [eos]),
        length_penalty=0.0, early_stopping=False, max_new_tokens=int(trie.lengths.max()),
        pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, return_dict_in_generate=True, output_scores=True)
    ours = constrained_beam_search(tiny_lm, trie, mask, input_ids=ids, config=BeamSearchConfig(num_beams=10, top_k=10))

    identical = 0
    for r, prompt in enumerate(prompt_ids):
        generated = out.sequences[r * 10:(r + 1) * 10, width:].tolist()
        hf_items = torch.tensor([column[tuple(g[:g.index(eos)])] for g in generated])
        hf_scores = out.sequences_scores[r * 10:(r + 1) * 10]
        # HF's scores are plain sums of full-vocabulary log-probs of real titles.
        with torch.no_grad():
            embeds = tiny_lm.get_input_embeddings()(torch.tensor(prompt))
        exact = torch.tensor(reference_scores(tiny_lm, embeds, big_title_ids, eos), dtype=torch.float32)
        torch.testing.assert_close(hf_scores, exact[hf_items], atol=1e-4, rtol=1e-6)
        assert len(set(hf_items.tolist())) == 10

        assert (ours.scores[r] >= hf_scores - 1e-4).all()
        above_ours = hf_scores > ours.scores[r, -1] + 1e-4
        assert set(hf_items[above_ours].tolist()) <= set(ours.items[r].tolist())
        identical += ours.items[r].tolist() == hf_items.tolist()
    assert identical >= 1  # the lists coincide unless HF's admission rule drops a title
