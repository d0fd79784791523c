"""The language-side measures of a run (llm/fluency.py) against a slow, one-sequence-at-a-time reference."""

from __future__ import annotations

import math

import pytest
import torch


@pytest.fixture(scope="module")
def run(small_config, tmp_path_factory):
    from tca4rec.llm.train import train

    return train(small_config(tmp_path_factory.mktemp("fluency") / "run", alpha=0.0))


def _sequence_nll(llm, prefix: list[int], tokens: list[int]) -> float:
    """Summed -log p of ``tokens`` after ``prefix``, one unpadded sequence."""
    ids = torch.tensor([prefix + tokens])
    with torch.no_grad():
        log_p = torch.log_softmax(llm(input_ids=ids).logits[0].double(), -1)
    return -sum(float(log_p[len(prefix) - 1 + k, t]) for k, t in enumerate(tokens))


def test_fluency_matches_a_per_sequence_reference(run):
    from tca4rec.llm.fluency import fluency
    from tca4rec.llm.run import load_llm_run

    texts = ["A red stapler", "Blue ink, 12 pack", "x"]
    got = fluency(run, rows=3, texts=texts, batch_size=2)
    ref = load_llm_run(run, merge=False)
    host, split = ref.host, ref.dataset.split("valid").head(3)
    total = count = 0
    for r in range(3):
        prompt = host.prompts(torch.tensor(split.histories[r:r + 1]))
        target = [t for t in host.target_tokens[int(split.targets[r]) - 1].tolist() if t >= 0]  # title + EOS
        total += _sequence_nll(host.llm, prompt.input_ids[0].tolist(), target)
        count += len(target)
    assert got["target_tokens"] == count and got["target_nll"] == pytest.approx(total / count, rel=1e-4)

    tok = ref.signals.tokenizer
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    expected = sum(_sequence_nll(host.llm, [start], s) for s in ids) / sum(map(len, ids))
    assert got["text_nll"] == pytest.approx(expected, rel=1e-4)
    with host.llm.disable_adapter():
        base = sum(_sequence_nll(host.llm, [start], s) for s in ids) / sum(map(len, ids))
    assert got["base_text_nll"] == pytest.approx(base, rel=1e-4)
    assert math.isfinite(got["text_nll"]) and got["texts"] == 3
