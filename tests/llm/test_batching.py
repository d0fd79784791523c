"""Length-grouped batching: a seeded permutation per epoch that pads less than random batches,
and `tca4rec bench train`, which measures that on real training steps, and the model FLOPs it
counts against those torch counts in a forward and backward pass."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tca4rec.bench.train import training_flops
from tca4rec.cli import main
from tca4rec.llm.train import LengthGroupedRows


def padded_slots(order: list[int], lengths: list[int], batch: int) -> int:
    """Positions computed when each batch is padded to its longest row (the slow reference)."""
    return sum(max(lengths[i] for i in order[s:s + batch]) * len(order[s:s + batch])
               for s in range(0, len(order), batch))


def test_length_grouped_rows_are_seeded_per_epoch_and_pad_less():
    rng = np.random.default_rng(0)
    lengths = rng.integers(40, 260, 400).tolist()
    sampler = LengthGroupedRows(lengths, batch_size=8, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(400))  # every row once per epoch
    assert list(LengthGroupedRows(lengths, 8, seed=3)) == first  # a resumed run sees the same order
    sampler.set_epoch(1)
    assert list(sampler) != first  # and a new order each epoch
    random_orders = [rng.permutation(400).tolist() for _ in range(5)]
    random_slots = np.mean([padded_slots(o, lengths, 8) for o in random_orders])
    assert padded_slots(first, lengths, 8) < 0.85 * random_slots


def test_bench_train_reports_both_modes_on_the_same_rows(synth_dir, tiny_llm_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "train", "--data", str(synth_dir), "--llm", str(tiny_llm_dir), "--steps", "3",
                 "--batch-size", "4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    base, grouped = result["random"], result["grouped"]
    assert base["steps"] == grouped["steps"] == 3
    # The same 12 rows in both modes: the same real tokens (up to the EOS a row shorter than its
    # batch's longest title is also fed), fewer padded ones when grouped.
    assert grouped["real_tokens_per_step"] == pytest.approx(base["real_tokens_per_step"], rel=0.02)
    # 12 short synthetic rows of similar length: the shares are measured, their order is not
    # meaningful at this size (the padding saving is checked on the sampler above).
    assert 0 < base["real_token_share"] <= 1 and 0 < grouped["real_token_share"] <= 1
    assert result["speedup_real_tokens_per_s"] > 0
    # Model FLOPs count the real tokens only: the same rows, the same FLOPs in both modes.
    assert grouped["model_flops"] == base["model_flops"] > 0
    assert result["peak_flops_per_s"] > 0 and result["utilization"]["grouped"] > 0
    printed = capsys.readouterr().out
    assert "length grouping:" in printed and "utilization" in printed


def test_training_flops_match_torchs_count_of_the_matmuls():
    """One unpadded row through a LoRA-wrapped tiny Llama with eager attention, which torch's
    FlopCounterMode sees as plain matmuls (the full square of query-key pairs, not the causal half)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         attn_implementation="eager")
    llm = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                              target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    n, kept = 20, 5
    with FlopCounterMode(display=False) as forward:
        logits = llm(input_ids=torch.randint(0, 300, (1, n)), logits_to_keep=kept).logits
    with FlopCounterMode(display=False) as backward:
        logits.logsumexp(-1).sum().backward()
    counted = training_flops(llm, [n], [kept])
    square = 4 * n * n * 2 * 4 * 8  # eager attention: scores and weighted values over all n x n pairs, 2 layers
    assert counted["attention"] == 4 * (n * (n + 1) // 2) * 2 * 4 * 8
    assert forward.get_total_flops() == counted["forward"] - counted["attention"] + square
    # Backward: the first layer's q/k/v projections (and their LoRA A) skip their input's gradient,
    # as the embeddings are frozen; everything else is counted.
    first_layer_inputs = 2 * n * (32 * 32 + 2 * 32 * 16 + 3 * 4 * 32)
    assert backward.get_total_flops() == counted["backward"] - 2 * counted["attention"] + 2 * square - first_layer_inputs
