"""Fixtures of the LLM tests: a trained CF run on the synthetic data, a tiny LLM that can fit
a few titles, and a small-run TrainConfig factory (tiny slices, few steps: CPU-friendly)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cf_run(synth_dataset, tmp_path_factory) -> Path:
    """A SASRec run on the synthetic dataset (1 epoch on 200 rows: signal quality is not tested here)."""
    from tca4rec.cf import train_cf

    return train_cf(synth_dataset, "sasrec", tmp_path_factory.mktemp("cf") / "sasrec", epochs=1, limit=200,
                    progress=False)


@pytest.fixture(scope="session")
def sharp_llm_dir(tmp_path_factory, tokenizer) -> Path:
    """Like ``tiny_llm_dir`` but with larger initial weights: the tied output embeddings of the
    default init (std 0.02) bound every logit near 1, so no LoRA can make one title likely."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         initializer_range=0.3, tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    out = tmp_path_factory.mktemp("sharp_llm")
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def small_config(synth_dir, tiny_llm_dir):
    """``small_config(out, **overrides)``: a TrainConfig of a few steps on a few rows."""
    from tca4rec.llm.config import TrainConfig

    def make(out, **overrides) -> TrainConfig:
        values = dict(data=str(synth_dir), out=str(out), llm=str(tiny_llm_dir), max_steps=1, save_steps=1,
                      eval_rows=0, batch_size=2, grad_accum=1, train_limit=8, logging_steps=1, eval_beams=2)
        values.update(overrides)
        return TrainConfig(**values)

    return make


def cli_train_args(config) -> list[str]:
    """The ``tca4rec train`` arguments equivalent to a TrainConfig made by ``small_config``."""
    args = ["train", "--data", config.data, "--out", config.out, "--llm", config.llm, "--host", config.host,
            "--alpha", str(config.alpha), "--max-steps", str(config.max_steps), "--save-steps", str(config.save_steps),
            "--eval-rows", str(config.eval_rows), "--batch-size", str(config.batch_size), "--grad-accum",
            str(config.grad_accum), "--train-limit", str(config.train_limit), "--logging-steps",
            str(config.logging_steps), "--eval-beams", str(config.eval_beams), "--seed", str(config.seed),
            "--lora-dropout", str(config.lora_dropout)]
    return args + (["--cf", config.cf] if config.cf else [])


def adapter_tensors(run_dir) -> dict:
    from safetensors.torch import load_file

    return load_file(Path(run_dir) / "adapter" / "adapter_model.safetensors")
