"""Every host, alone (alpha 0) and with TCA4Rec (alpha 0.1): train a step, evaluate, recommend."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tca4rec.errors import ConfigError

from .conftest import adapter_tensors


@pytest.mark.parametrize("host,alpha", [("tallrec", 0.0), ("tallrec", 0.1), ("llara", 0.0), ("llara", 0.1),
                                        ("msl", 0.0), ("msl", 0.1)])
def test_train_evaluate_recommend(host, alpha, small_config, cf_run, synth_dataset, tmp_path):
    from tca4rec.llm.evaluate import evaluate_llm_run
    from tca4rec.llm.recommend import recommend
    from tca4rec.llm.train import train

    needs_cf = alpha > 0 or host == "llara"
    config = small_config(tmp_path / "run", host=host, alpha=alpha, cf=str(cf_run) if needs_cf else None)
    run_dir = train(config)

    # LoRA B starts at zero: a nonzero B proves an optimizer step reached the adapter.
    weights = adapter_tensors(run_dir)
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items())
    assert (run_dir / "projector.safetensors").is_file() == (host == "llara")
    stored = json.loads((run_dir / "config.json").read_text())
    assert stored["config"]["host"] == host and stored["dataset_fingerprint"] == synth_dataset.fingerprint()
    assert [json.loads(line)["step"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()][0] == 1

    record = evaluate_llm_run(run_dir, split="test", limit=2, beams=2)
    assert record["rows"] == 2 and set(record["metrics"]) >= {"HR@1", "HR@3", "NDCG@10"}
    assert json.loads((run_dir / "metrics_test.json").read_text()) == record
    predictions = [json.loads(line) for line in (run_dir / "predictions_test.jsonl").read_text().splitlines()]
    test = synth_dataset.split("test")
    for r, pred in enumerate(predictions):
        assert pred["target"] == int(test.targets[r]) and len(pred["items"]) == 2
        assert all(1 <= i <= synth_dataset.num_items for i in pred["items"])
        assert pred["titles"] == [synth_dataset.titles[i] for i in pred["items"]]
        assert pred["target_title"] == synth_dataset.titles[pred["target"]]
        assert pred["scores"] == sorted(pred["scores"], reverse=True) and all(s <= 0 for s in pred["scores"])

    history = [synth_dataset.titles[i] for i in test.history(0)]
    recs = recommend(run_dir, history, k=2)
    assert len(recs) == 2 and recs[0].score >= recs[1].score
    assert all(synth_dataset.titles[r.item_id] == r.title for r in recs)
    if host == "tallrec" and alpha == 0:  # a history longer than the model reads: said, and the same answer
        width = test.histories.shape[1]
        notes: list[str] = []
        long = [synth_dataset.titles[1 + i % 50] for i in range(600)] + history
        cut = recommend(run_dir, long, k=2, note=notes.append)
        assert notes == [f"the history has {len(long)} titles; the model reads the last {width} (the dataset's "
                         f"history width), the first {len(long) - width} are not used"]
        assert cut == recommend(run_dir, long[-width:], k=2, note=notes.append) and len(notes) == 1


def test_host_prompts_match_prompt_builder(small_config, cf_run, tmp_path, tokenizer):
    """Left-padded batch prompts are the PromptBuilder ids, and llara slots point at placeholders."""
    from tca4rec.llm.prompts import PromptBuilder
    from tca4rec.llm.run import Signals, build_host

    config = small_config(tmp_path / "run", host="llara", cf=str(cf_run))
    signals = Signals.build(config)
    host = build_host(config, signals, trainable=True)
    split = signals.dataset.split("train")
    histories = torch.tensor(split.histories[:5])
    prompt = host.prompts(histories)
    builder = PromptBuilder(tokenizer, with_slots=True)
    placeholder = tokenizer(" [emb]", add_special_tokens=False).input_ids[-1]
    for r in range(5):
        built = builder.build([signals.title_ids[i] for i in split.history(r)])
        real = prompt.attention_mask[r].bool()
        assert prompt.input_ids[r][real].tolist() == built.ids
        slots = prompt.slot_positions[r][prompt.slot_positions[r] >= 0]
        assert len(slots) == len(split.history(r))
        assert (prompt.input_ids[r, slots] == placeholder).all()
        assert prompt.input_ids[r, prompt.user_slot[r]] == placeholder


def test_recommend_unknown_title_lists_close_titles(synth_dataset):
    from tca4rec.llm.recommend import history_item_ids

    title = synth_dataset.titles[5]
    with pytest.raises(ConfigError, match="closest catalog titles") as err:
        history_item_ids([title[:-2]], synth_dataset.titles, 10)
    assert repr(title) in str(err.value)
    assert history_item_ids([title], synth_dataset.titles, 10) == [int(synth_dataset.title_group[5])]
    huge = title * 5000  # quoted whole, a 100 KB error line; compared with every title, seconds of difflib
    with pytest.raises(ConfigError, match=r"history\[0\] '.*'\.\.\. \(.* chars\) is not a catalog title$") as err:
        history_item_ids([huge], synth_dataset.titles, 10)
    assert len(str(err.value)) < 300 and err.value.value == huge


def test_overfits_a_tiny_catalog(synth_dataset, sharp_llm_dir, tmp_path):
    """After some steps on two rows, constrained beam search puts each row's target first."""
    import dataclasses

    from tca4rec.data import save_dataset
    from tca4rec.llm.config import TrainConfig
    from tca4rec.llm.evaluate import evaluate_llm_run
    from tca4rec.llm.train import train

    train_rows = synth_dataset.split("train")
    # Two rows with different histories (rows of one user share a history prefix).
    rows = np.array([r for r in range(len(train_rows)) if len(train_rows.history(r)) == 2][:2])
    assert len(rows) == 2 and train_rows.history(rows[0]) != train_rows.history(rows[1])
    two = dataclasses.replace(train_rows, users=train_rows.users[rows], histories=train_rows.histories[rows],
                              targets=train_rows.targets[rows], timestamps=train_rows.timestamps[rows])
    data = save_dataset(dataclasses.replace(synth_dataset, splits={
        name: dataclasses.replace(two, name=name) for name in ("train", "valid", "test")}), tmp_path / "two")
    config = TrainConfig(data=str(data), out=str(tmp_path / "run"), llm=str(sharp_llm_dir), max_steps=50,
                         save_steps=1000, eval_rows=0, batch_size=2, grad_accum=1, lr=0.03, lora_dropout=0.0,
                         logging_steps=10)
    record = evaluate_llm_run(train(config), split="test", beams=2)
    assert record["metrics"]["HR@1"] == 1.0
