"""CF-guided decoding through a run: evaluate / tune-beta / recommend flags, the stored beta, refusals;
the item a shared title names; the language-side measures of a run (llm/fluency.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tca4rec.errors import ConfigError


@pytest.fixture(scope="module")
def runs(small_config, cf_run, tmp_path_factory):
    """A TCA4Rec run (its teacher: cf_run) and a host-alone run without any CF run, 1 step each."""
    from tca4rec.llm.train import train

    root = tmp_path_factory.mktemp("guided")
    return (train(small_config(root / "tca", cf=str(cf_run), alpha=0.1)),
            train(small_config(root / "alone", alpha=0.0)))


def title_log_probs(cf_model, dataset, split, row: int) -> dict[int, float]:
    """log p_CF of every item's title for one row, identical titles merged (slow and obvious)."""
    with torch.no_grad():
        z = cf_model(torch.tensor(split.users[row:row + 1]), torch.tensor(split.histories[row:row + 1]))[0, 1:]
    log_p = torch.log_softmax(z.double(), 0).numpy()
    merged: dict[int, list[float]] = {}
    for item in range(1, dataset.num_items + 1):
        merged.setdefault(int(dataset.title_group[item]), []).append(float(log_p[item - 1]))
    group_log_p = {g: float(np.logaddexp.reduce(v)) for g, v in merged.items()}
    return {item: group_log_p[int(dataset.title_group[item])] for item in range(1, dataset.num_items + 1)}


@pytest.mark.parametrize("lookahead", ["sum", "max"])
def test_large_beta_scores_are_the_teachers_title_probabilities(runs, cf_run, lookahead):
    """At beta = 1e7 a returned score / beta is log p_CF(title) up to LLM / 1e7 (tiny LLM: ~ -300 / 1e7);
    with the max lookahead the 3 beams find the teacher's own top 3 titles."""
    from tca4rec.cf import load_cf_run
    from tca4rec.data import load_dataset
    from tca4rec.llm.evaluate import evaluate_llm_run

    tca, _ = runs
    record = evaluate_llm_run(tca, split="valid", limit=2, beams=3, beta=1e7, cf_lookahead=lookahead)
    assert record["beta"] == 1e7 and record["guide_cf"] == "teacher" and not (tca / "metrics_valid.json").exists()
    assert record["cf_lookahead"] == lookahead
    suffix = "_beta1e+07" + ("_max" if lookahead == "max" else "")
    assert (tca / f"metrics_valid{suffix}.json").is_file()
    predictions = [json.loads(line) for line in (tca / f"predictions_valid{suffix}.jsonl").read_text().splitlines()]
    dataset = load_dataset(json.loads((tca / "config.json").read_text())["config"]["data"])
    cf_model = load_cf_run(cf_run, dataset).eval()
    for p in predictions:
        expected = title_log_probs(cf_model, dataset, dataset.split("valid"), p["row"])
        got = np.array(p["scores"]) / 1e7
        np.testing.assert_allclose(got, [expected[i] for i in p["items"]], atol=1e-4)
        assert got[0] >= got[-1]
        if lookahead == "max":
            np.testing.assert_allclose(got, sorted(set(expected.values()), reverse=True)[:3], atol=1e-4)


def test_decoding_variants_have_their_own_files():
    from tca4rec.llm.evaluate import decoding_suffix

    assert decoding_suffix(2, False, "sum") == "_beta2"  # committed names stay valid
    assert decoding_suffix(2, False) == "_beta2_max"  # the default lookahead
    assert decoding_suffix(2, True, "max") == "_beta2_max_lennorm"
    assert decoding_suffix(0, False, "max") == ""  # beta 0 is plain decoding, whatever the lookahead


def test_a_tuned_beta_is_tied_to_its_lookahead(tmp_path):
    from tca4rec.llm.decoding import read_tuned_beta, tuned_beta_file

    assert tuned_beta_file("sum") == "beta_tuning.json" and tuned_beta_file("max") == "beta_tuning_max.json"
    record = {"best_beta": 2.0, "cf_run": "teacher", "cf_lookahead": "max"}
    (tmp_path / "beta_tuning_max.json").write_text(json.dumps(record))
    assert read_tuned_beta(tmp_path, None, "max") == 2.0
    assert read_tuned_beta(tmp_path, None) == 2.0  # max is the default
    with pytest.raises(ConfigError, match="--cf-lookahead sum"):  # not tuned for sum yet
        read_tuned_beta(tmp_path, None, "sum")
    (tmp_path / "beta_tuning.json").write_text(json.dumps(record))  # a file that claims otherwise
    with pytest.raises(ConfigError, match="tuned with --cf-lookahead max, not sum"):
        read_tuned_beta(tmp_path, None, "sum")
    del record["cf_lookahead"]  # a record from before the option: tuned with sum
    (tmp_path / "beta_tuning.json").write_text(json.dumps(record))
    assert read_tuned_beta(tmp_path, None, "sum") == 2.0


def test_tune_beta_then_auto(runs, capsys):
    from tca4rec.cli import main
    from tca4rec.llm.evaluate import evaluate_llm_run

    tca, _ = runs
    assert main(["tune-beta", "--run", str(tca), "--rows", "3", "--grid", "1", "0", "--beams", "2",
                 "--cf-lookahead", "sum"]) == 0
    stored = json.loads((tca / "beta_tuning.json").read_text())
    assert [row["beta"] for row in stored["table"]] == [0.0, 1.0] and stored["best_beta"] in (0.0, 1.0)
    out = capsys.readouterr().out
    assert stored["split"] == "valid" and stored["rows"] == 3 and "chosen beta" in out
    assert ("the largest tried" in out) == (stored["best_beta"] == 1.0)  # at the grid's top: say so
    plain = evaluate_llm_run(tca, split="valid", limit=3, beams=2)
    assert stored["table"][0]["NDCG@10"] == pytest.approx(plain["metrics"]["NDCG@10"])
    # The rows behind the table are kept: each beta's and the teacher's own ranking, recomputable.
    behind = [json.loads(line) for line in (tca / stored["predictions"]).read_text().splitlines()]
    assert [p["beta"] for p in behind] == [0.0] * 3 + [1.0] * 3 + [None] * 3
    for row in (*stored["table"], {"beta": None, **stored["cf_alone"]}):
        ranks = np.array([p["rank"] for p in behind if p["beta"] == row["beta"]])
        gains = np.where(ranks > 0, 1 / np.log2(np.maximum(ranks, 1) + 1), 0)
        assert row["NDCG@10"] == pytest.approx(float(gains.mean()))
    auto = evaluate_llm_run(tca, split="valid", limit=3, beams=2, beta="auto", cf_lookahead="sum")
    assert auto["beta"] == stored["best_beta"]
    for split in ("test", "train"):  # train was accepted, and then used by --beta auto
        assert main(["tune-beta", "--run", str(tca), "--split", split]) == 2
        assert f"--split {split}: beta is chosen on valid rows, never on the test rows" in capsys.readouterr().err
    assert main(["tune-beta", "--run", str(tca), "--rows", "3", "--grid", "0", "1", "--beams", "2"]) == 0  # max
    tuned_max = json.loads((tca / "beta_tuning_max.json").read_text())
    assert tuned_max["cf_lookahead"] == "max" and "beta_tuning_max.json" in capsys.readouterr().out
    assert json.loads((tca / "beta_tuning.json").read_text()) == stored  # the sum tuning stays
    auto = evaluate_llm_run(tca, split="valid", limit=3, beams=2, beta="auto")
    assert auto["beta"] == tuned_max["best_beta"]
    (tca / "beta_tuning_max.json").write_text(json.dumps({**tuned_max, "split": "train"}))  # an older tune-beta's
    with pytest.raises(ConfigError, match="was tuned on train rows, not valid ones"):
        evaluate_llm_run(tca, split="valid", limit=3, beams=2, beta="auto")
    (tca / "beta_tuning_max.json").write_text(json.dumps(tuned_max))
    capsys.readouterr()
    assert main(["evaluate", "--run", str(tca), "--cf-lookahead", "mean"]) == 2  # refused by the search, one line
    err = capsys.readouterr().err.strip()
    assert "cf_lookahead 'mean'" in err and "\n" not in err


def test_run_without_teacher_needs_a_cf_run(runs, cf_run, capsys):
    from tca4rec.cli import main
    from tca4rec.data import load_dataset
    from tca4rec.llm.evaluate import evaluate_llm_run

    _, alone = runs
    with pytest.raises(ConfigError, match="--cf-run"):
        evaluate_llm_run(alone, split="valid", limit=2, beams=2, beta=1)
    with pytest.raises(ConfigError, match="tune-beta"):
        evaluate_llm_run(alone, split="valid", limit=2, beams=2, beta="auto")
    with pytest.raises(ConfigError, match="must be"):
        evaluate_llm_run(alone, split="valid", limit=2, beams=2, beta="-1")
    record = evaluate_llm_run(alone, split="valid", limit=2, beams=2, beta=0.5, cf_run=cf_run, length_normalize=True)
    assert record["guide_cf"] == str(cf_run) and (alone / "metrics_valid_beta0.5_max_lennorm.json").is_file()
    ds = load_dataset(json.loads((alone / "config.json").read_text())["config"]["data"])
    capsys.readouterr()
    assert main(["recommend", "--run", str(alone), "--history", ds.titles[3], "--k", "2", "--beta", "1",
                 "--cf-run", str(cf_run), "--cf-lookahead", "max"]) == 0
    assert "item id" in capsys.readouterr().out


def test_a_tuned_beta_belongs_to_the_cf_model_not_to_its_path(runs, cf_run, synth_dataset, tmp_path, monkeypatch):
    """Tuned with runs/sasrec, then runs/sasrec means another model (another working folder):
    refused. The same model named by another path (absolute, a copy) is accepted."""
    import shutil

    from tca4rec.cf import train_cf
    from tca4rec.llm.evaluate import evaluate_llm_run
    from tca4rec.llm.tune_beta import tune_beta

    _, alone = runs
    here, there = tmp_path / "here", tmp_path / "there"
    (here / "runs").mkdir(parents=True)
    shutil.copytree(cf_run, here / "runs" / "sasrec")
    train_cf(synth_dataset, "mostpop", there / "runs" / "sasrec", progress=False)  # another model, same relative path
    monkeypatch.chdir(here)
    record = tune_beta(alone, rows=2, grid=[0, 1], cf_run="runs/sasrec", beams=2)
    assert record["cf_fingerprint"]
    auto = evaluate_llm_run(alone, split="valid", limit=2, beams=2, beta="auto", cf_run=str(here / "runs" / "sasrec"))
    assert auto["beta"] == record["best_beta"]  # the same folder by its absolute path
    assert evaluate_llm_run(alone, split="valid", limit=2, beams=2, beta="auto", cf_run=str(cf_run))["beta"] == \
        record["best_beta"]  # the original, of identical content
    monkeypatch.chdir(there)
    with pytest.raises(ConfigError, match="another CF model"):
        evaluate_llm_run(alone, split="valid", limit=2, beams=2, beta="auto", cf_run="runs/sasrec")


def test_a_shared_title_names_the_item_its_cf_model_or_popularity_ranks_first(runs, cf_run, synth_dataset):
    """Evaluation picks, among same-title items, the teacher's best (a run with a teacher) or the
    most popular in train (a run without one); the title, and so every title-level hit, is kept."""
    from tca4rec.cf import load_cf_run
    from tca4rec.llm.decoding import choose_items, item_logits
    from tca4rec.llm.evaluate import evaluate_llm_run

    valid = synth_dataset.split("valid")
    shared = synth_dataset.same_title_items.members  # [M, G] the items of each shared title
    reps = np.repeat(shared[:, :1], 4, axis=1).T  # [4, M]: each row ranks every shared title by its first item
    teacher = load_cf_run(cf_run, synth_dataset).eval()
    logits = item_logits(teacher, torch.tensor(valid.users[:4]), torch.tensor(valid.histories[:4]))
    by_cf = choose_items(synth_dataset, reps, logits)
    for r in range(4):
        for m, item in enumerate(by_cf[r]):
            members = shared[m][shared[m] > 0]
            assert item == members[np.argmax(logits[r, members - 1].numpy())]
    by_popularity = choose_items(synth_dataset, reps, None)
    assert (synth_dataset.train_popularity[by_popularity] == synth_dataset.train_popularity[shared].max(1)).all()

    tca, alone = runs
    assert evaluate_llm_run(tca, split="valid", limit=2, beams=3)["item_choice"] == "cf"
    assert evaluate_llm_run(alone, split="valid", limit=2, beams=3)["item_choice"] == "popularity"


def _sequence_nll(llm, prefix: list[int], tokens: list[int]) -> float:
    """Summed -log p of ``tokens`` after ``prefix``, one unpadded sequence."""
    ids = torch.tensor([prefix + tokens])
    with torch.no_grad():
        log_p = torch.log_softmax(llm(input_ids=ids).logits[0].double(), -1)
    return -sum(float(log_p[len(prefix) - 1 + k, t]) for k, t in enumerate(tokens))


def test_fluency_matches_a_per_sequence_reference(runs):
    from tca4rec.llm.fluency import fluency
    from tca4rec.llm.run import load_llm_run

    _, run = runs  # the host alone
    texts = ["A red stapler", "Blue ink, 12 pack", "x", "A"]
    got = fluency(run, rows=5, texts=texts, batch_size=2)  # batched by length: rows come back in their order
    ref = load_llm_run(run, merge=False)
    host, split = ref.host, ref.dataset.split("valid").head(5)
    row_nll, row_tokens = [], []
    for r in range(5):
        prompt = host.prompts(torch.tensor(split.histories[r:r + 1]))
        target = [t for t in host.target_tokens[int(split.targets[r]) - 1].tolist() if t >= 0]  # title + EOS
        row_nll.append(_sequence_nll(host.llm, prompt.input_ids[0].tolist(), target))
        row_tokens.append(len(target))
    assert got["target_row_tokens"] == row_tokens and got["target_tokens"] == sum(row_tokens)
    assert got["target_row_nll"] == pytest.approx(row_nll, rel=1e-4)
    assert got["target_nll"] == pytest.approx(sum(row_nll) / sum(row_tokens), rel=1e-4)

    tok = ref.signals.tokenizer
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    per_text = [_sequence_nll(host.llm, [start], s) for s in ids]
    assert got["text_row_tokens"] == [len(s) for s in ids] and got["text_row_nll"] == pytest.approx(per_text, rel=1e-4)
    assert got["text_nll"] == pytest.approx(sum(per_text) / sum(map(len, ids)), rel=1e-4)
    with host.llm.disable_adapter():
        base = [_sequence_nll(host.llm, [start], s) for s in ids]
    assert got["base_text_row_nll"] == pytest.approx(base, rel=1e-4)
    assert got["base_text_nll"] == pytest.approx(sum(base) / sum(map(len, ids)), rel=1e-4)
    assert math.isfinite(got["text_nll"]) and got["texts"] == 4


def test_a_saved_adapter_names_its_base_model_not_a_path_of_this_machine(runs, tiny_llm_dir, tmp_path):
    """Runs are committed as results: peft's records of the base model keep only its folder name,
    and saving never makes peft look the model up on a hub (it warns when it cannot)."""
    import warnings

    from tca4rec.llm.run import load_llm_run
    from tca4rec.llm.weights import save_weights

    for run in runs:
        config = json.loads((run / "adapter" / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == tiny_llm_dir.name
        assert str(tiny_llm_dir) not in (run / "adapter" / "README.md").read_text()
    host = load_llm_run(runs[0], merge=False).host
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_weights(host, tmp_path / "again")
    assert not [w for w in caught if "Could not find a config file" in str(w.message)]
    assert json.loads((tmp_path / "again" / "adapter" / "adapter_config.json").read_text())[
        "base_model_name_or_path"] == tiny_llm_dir.name


def test_a_parameter_free_teacher_teaches_guides_and_chooses_items(synth_dataset, small_config, tmp_path):
    """MostPop has buffers, no parameters: where a CF model's device was its first parameter,
    training with it as the teacher (alpha > 0) stopped with StopIteration."""
    from tca4rec.cf import train_cf
    from tca4rec.llm.evaluate import evaluate_llm_run
    from tca4rec.llm.train import train

    teacher = train_cf(synth_dataset, "mostpop", tmp_path / "mostpop", progress=False)
    run = train(small_config(tmp_path / "run", cf=str(teacher), alpha=0.1))
    assert json.loads((run / "train_log.jsonl").read_text().splitlines()[0])["loss"] > 0
    plain = evaluate_llm_run(run, limit=4, beams=2)
    guided = evaluate_llm_run(run, limit=4, beams=2, beta=1.0)
    assert plain["rows"] == guided["rows"] == 4 and guided["guide_cf"] and plain["item_choice"]
