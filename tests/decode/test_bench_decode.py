"""``tca4rec bench decode``: its measurement core on the tiny model, and its option errors."""

from __future__ import annotations

from tca4rec.align.trie import TitleTrie
from tca4rec.bench.decode import next_tokens_by_prefix, run_bench
from tca4rec.cli import main


def test_dict_trie_lists_allowed_next_tokens():
    allowed = next_tokens_by_prefix([[5, 6], [5, 7], [5]], eos_token_id=2)
    assert allowed == {(): [5], (5,): [2, 6, 7], (5, 6): [2], (5, 7): [2]}


def test_run_bench_compares_both_decoders(tiny_lm, tokenizer, big_title_ids, prompt_ids):
    trie = TitleTrie(big_title_ids, tokenizer.eos_token_id)
    prompts = prompt_ids[1:]
    result = run_bench(tiny_lm, trie, big_title_ids, prompts, tokenizer.pad_token_id, beams=10, batch=2)
    assert result["samples"] == len(prompts)
    assert len(result["hf_items"]) == len(result["ours_items"]) == len(prompts)
    assert all(len(row) == 10 and min(row) >= 0 for row in result["hf_items"] + result["ours_items"])
    assert result["ours_at_least_as_good"] == len(prompts)
    assert result["identical_top_k"] >= 1  # lists differ only where HF's admission rule drops a title
    assert result["speedup"] > 0 and result["ours_steps_per_batch"] >= 1
    assert result["guided_seconds"] > 0 and result["floor_seconds"] > 0 and result["ours_over_floor"] > 0
    assert result["shared_prompt_kv"] and result["copied_identical"] and result["copied_max_score_difference"] < 1e-4
    assert result["step_floor_seconds"] > 0 and result["ours_forwards_per_batch"] <= result["ours_steps_per_batch"]
    alone = run_bench(tiny_lm, trie, big_title_ids, prompts, tokenizer.pad_token_id, beams=10, batch=2, with_hf=False,
                      with_copied=False, cf_lookahead="sum")
    assert "hf_seconds" not in alone and "copied_seconds" not in alone and alone["ours_items"] == result["ours_items"]
    assert (result["cf_lookahead"], alone["cf_lookahead"]) == ("max", "sum")  # max: the default


def test_run_bench_of_a_model_that_cannot_share_prompt_kv(tiny_lm_own_attention, tokenizer, big_title_ids,
                                                          prompt_ids):
    trie = TitleTrie(big_title_ids, tokenizer.eos_token_id)
    result = run_bench(tiny_lm_own_attention, trie, big_title_ids, prompt_ids[1:], tokenizer.pad_token_id, beams=4,
                       batch=2, with_hf=False)
    assert not result["shared_prompt_kv"] and result["copied_identical"]  # both searches copy: the same run
    assert result["floor_seconds"] > 0 and len(result["ours_items"]) == 2


def test_bad_option_is_a_one_line_error(synth_dir, capsys):
    assert main(["bench", "decode", "--data", str(synth_dir), "--beams", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
    assert main(["bench", "decode", "--data", str(synth_dir), "--beta", "0"]) == 2
    assert "--beta 0.0: must be > 0" in capsys.readouterr().err
