"""Shared fixtures: the real datasets beside the repository, a small synthetic dataset, and a
tiny random decoder LLM that uses the default LLM's tokenizer (fast enough for CPU tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Under pytest-xdist (`make test` runs one worker per core) each worker gets its share of the
# cores, torch's and the subprocesses' the tests start: oversubscribed threads spin and crawl.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TCA4REC_SHARED", REPO.parent / "shared"))
AMAZON = SHARED / "data" / "amazon2018"


def amazon_path(name: str) -> Path:
    """A real dataset from ../shared (never copied into the repository); skip if absent."""
    path = AMAZON / name
    if not (path / "item.csv").is_file():
        pytest.skip(f"real dataset {name} not found under {AMAZON}")
    return path


@pytest.fixture(scope="session")
def toys_dir() -> Path:
    return amazon_path("Toys_and_Games")


@pytest.fixture(scope="session")
def office_dir() -> Path:
    return amazon_path("Office_Products")


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic dataset in the release format (300 items, 200 users)."""
    from tca4rec.data.synth import SynthConfig, write_synthetic_dataset

    out = tmp_path_factory.mktemp("synth") / "data"
    write_synthetic_dataset(out, SynthConfig(num_items=300, num_users=200, seed=0))
    return out


@pytest.fixture(scope="session")
def synth_dataset(synth_dir):
    from tca4rec.data import load_dataset

    return load_dataset(synth_dir)


@pytest.fixture(scope="session")
def tokenizer():
    from tca4rec.llm.model import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory, tokenizer) -> Path:
    """A 2-layer random Llama with the default tokenizer, saved as a local HF folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    out = tmp_path_factory.mktemp("tiny_llm")
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
