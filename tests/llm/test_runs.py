"""Run folders: SIGKILL + --resume, determinism, 2-process torchrun, the CLI, and refusals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tca4rec.errors import RunError

from .conftest import adapter_tensors, cli_train_args

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def _same_adapters(a, b, atol=1e-6) -> None:
    ta, tb = adapter_tensors(a), adapter_tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        torch.testing.assert_close(ta[k], tb[k], atol=atol, rtol=0, msg=k)


@pytest.fixture(scope="module")
def reference_run(small_config, tmp_path_factory):
    """An uninterrupted 6-step run (LoRA dropout on, so resuming must restore the RNG too)."""
    from tca4rec.llm.train import train

    config = small_config(tmp_path_factory.mktemp("ref") / "run", max_steps=6, save_steps=2)
    return config, train(config)


def test_sigkill_then_resume_matches_uninterrupted_run(reference_run, tmp_path, capsys):
    """Kill the CLI after its first checkpoint, resume through the CLI; same adapter, same metrics."""
    from tca4rec.cli import main
    from tca4rec.llm.evaluate import evaluate_llm_run

    config, reference = reference_run
    out = tmp_path / "run"
    args = cli_train_args(config)
    args[args.index("--out") + 1] = str(out)
    proc = subprocess.Popen([sys.executable, "-m", "tca4rec.cli", *args], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter").exists()  # killed before the end

    assert main(args + ["--resume"]) == 0
    _same_adapters(reference, out)
    assert evaluate_llm_run(out, limit=2, beams=2)["metrics"] == evaluate_llm_run(reference, limit=2, beams=2)["metrics"]

    # The rest of the CLI on the resumed run.
    capsys.readouterr()
    assert main(["evaluate", "--run", str(out), "--split", "valid", "--limit", "2", "--beams", "2"]) == 0
    assert "HR@3" in capsys.readouterr().out and (out / "metrics_valid.json").is_file()
    from tca4rec.data import load_dataset

    ds = load_dataset(config.data)
    assert main(["recommend", "--run", str(out), "--history", ds.titles[3], ds.titles[4], "--k", "2"]) == 0
    printed = capsys.readouterr().out
    first = json.loads((out / "predictions_valid.jsonl").read_text().splitlines()[0])
    assert "item id" in printed and any(ds.titles[i][:20] in printed for i in range(1, ds.num_items + 1))
    assert first["row"] == 0


def test_same_seed_same_run(reference_run, small_config, tmp_path, capsys):
    """Determinism, with evaluation-based model selection switched on; the console shows one
    training bar with loss, rows/s and valid HR@3, never the Trainer's raw log dicts."""
    from tca4rec.llm.evaluate import evaluate_llm_run
    from tca4rec.llm.train import train

    config = small_config(tmp_path / "a", max_steps=2, save_steps=1, eval_rows=2, eval_beams=2)
    first = train(config)
    console = capsys.readouterr()
    assert "{'loss'" not in console.out + console.err and "'eval_HR@3'" not in console.out + console.err
    assert "train tallrec (alpha 0)" in console.err and "loss=" in console.err and "valid HR@3=" in console.err
    second = train(small_config(tmp_path / "b", max_steps=2, save_steps=1, eval_rows=2, eval_beams=2))
    _same_adapters(first, second, atol=0)
    state = json.loads((first / "train_state.json").read_text())
    assert state["best_checkpoint"] is not None and state == json.loads((second / "train_state.json").read_text())
    log = [json.loads(line) for line in (first / "train_log.jsonl").read_text().splitlines()]
    assert any("eval_HR@3" in r for r in log) and any("loss" in r for r in log)
    assert evaluate_llm_run(first, limit=2, beams=2) ["metrics"] == evaluate_llm_run(second, limit=2, beams=2)["metrics"]


def test_resume_with_more_steps_continues_on_the_new_schedule(small_config, tmp_path):
    """A finished run resumed with a larger max_steps: its first new step runs at the new linear
    schedule's rate, not at the 0 the old schedule had reached."""
    from tca4rec.llm.train import train

    run = train(small_config(tmp_path / "run", max_steps=4, save_steps=2, lr=1e-3))
    train(small_config(tmp_path / "run", max_steps=8, save_steps=2, lr=1e-3), resume=True)
    log = map(json.loads, (run / "train_log.jsonl").read_text().splitlines())
    rates = {r["step"]: r["learning_rate"] for r in log if "learning_rate" in r}
    assert rates[4] == pytest.approx(2.5e-4)  # the first run: 1e-3 decaying to 0 over 4 steps
    assert [rates[s] for s in range(5, 9)] == pytest.approx([5e-4, 3.75e-4, 2.5e-4, 1.25e-4])  # 1e-3 (8 - s + 1) / 8


def test_two_processes_match_one(small_config, tmp_path):
    """torchrun (gloo, 2 CPU processes, batch 2 each) == 1 process with batch 4."""
    from tca4rec.llm.train import train

    one = train(small_config(tmp_path / "one", max_steps=2, save_steps=2, batch_size=4, lora_dropout=0.0))
    two = small_config(tmp_path / "two", max_steps=2, save_steps=2, batch_size=2, lora_dropout=0.0)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "-m", "tca4rec.cli", *cli_train_args(two)], env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    _same_adapters(one, two.out, atol=1e-6)


def test_refusals(small_config, cf_run, tmp_path, tmp_path_factory, capsys):
    from tca4rec.cli import main
    from tca4rec.data.synth import SynthConfig, write_synthetic_dataset
    from tca4rec.llm.run import load_llm_run
    from tca4rec.llm.train import train

    config = small_config(tmp_path / "run")
    run_dir = train(config)

    def fails(argv, needle):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err

    train_args = cli_train_args(config)
    fails(train_args, "--resume")  # the run exists
    fails([*train_args, "--overwrite", "--alpha", "1.5"], "--alpha 1.5")
    fails([*train_args, "--overwrite", "--seed", "-1"], "--seed: -1 is not a seed")
    on_cf_run = [str(cf_run) if arg == config.out else arg for arg in train_args]
    fails([*on_cf_run, "--overwrite"], "is a CF run folder (its config.json is not an LLM run's); refusing to delete")
    fails(["evaluate", "--run", str(run_dir), "--limit", "3", "--sample-seed", "-1"], "--sample-seed: -1 is not a seed")
    fails([*train_args, "--overwrite", "--host", "msl", "--tau", "0"], "--tau 0")
    fails([*train_args, "--overwrite", "--alpha", "0.1"], "--cf")  # alpha > 0 without a CF run
    fails(["evaluate", "--run", str(tmp_path / "missing")], "does not exist")
    fails(["recommend", "--run", str(run_dir), "--history", "x", "--k", "3", "--beams", "2"], "--beams 2")
    fails(["recommend", "--run", str(run_dir), "--history", "x", "--k", "0"], "--k 0")
    with pytest.raises(SystemExit):
        main(["evaluate", "--run", str(run_dir), "--beams", "0"])

    other = tmp_path_factory.mktemp("other") / "data"
    write_synthetic_dataset(other, SynthConfig(num_items=120, num_users=60, seed=1))
    with pytest.raises(RunError, match="another dataset"):
        load_llm_run(run_dir, data=other)
    # A CF run of the synthetic dataset does not fit the other catalog.
    fails(["train", "--data", str(other), "--out", str(tmp_path / "x"), "--llm", config.llm, "--alpha", "0.1",
           "--cf", str(cf_run), "--max-steps", "1"], "another dataset")

    # Pickles dropped into the run folder are never unpickled.
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle

    for path in (run_dir / "adapter" / "adapter_model.bin", run_dir / "projector.pt", run_dir / "model.pt"):
        path.write_bytes(pickle.dumps(Payload()))
    run = load_llm_run(run_dir)
    assert run.config.host == "tallrec"
    from tca4rec.llm.evaluate import evaluate_llm_run

    evaluate_llm_run(run_dir, limit=1, beams=2)
    assert not marker.exists()


def test_killed_evaluation_resumes_with_the_rows_it_decoded(reference_run, tmp_path, monkeypatch):
    """Blocks of 2 rows; the evaluation dies in its second block, then a new call decodes only
    the rest, and metrics and predictions equal an uninterrupted evaluation's."""
    import shutil

    import tca4rec.llm.decoding as decoding
    import tca4rec.llm.evaluate as llm_eval

    _, reference = reference_run
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    uninterrupted = llm_eval.evaluate_llm_run(run, limit=5, beams=2, batch_size=2)
    expected_predictions = (run / "predictions_test.jsonl").read_text()

    monkeypatch.setattr(llm_eval, "BLOCK_BATCHES", 1)
    real = decoding.evaluate_rows
    decoded: list[int] = []

    def dies_in_second_block(host, signals, split, **kwargs):
        if len(decoded) == 2:
            raise KeyboardInterrupt  # stands for the kill
        decoded.extend(split.row_ids.tolist())
        return real(host, signals, split, **kwargs)

    monkeypatch.setattr(llm_eval, "evaluate_rows", dies_in_second_block)
    (run / "predictions_test.jsonl").unlink()
    with pytest.raises(KeyboardInterrupt):
        llm_eval.evaluate_llm_run(run, limit=5, beams=2, batch_size=2)
    partial = json.loads((run / "decode_test.partial.json").read_text())
    assert len(partial["items"]) == 2
    path, key = run / "decode_test.partial.json", partial["key"]
    assert len(llm_eval._read_partial(path, key)[0]) == 2
    for changed in ({**key, "beams": 3}, {**key, "weights": []}, {**key, "rows": key["rows"][:4]}):
        assert len(llm_eval._read_partial(path, changed)[0]) == 0  # other settings or weights: start over

    for weights in run.rglob("*.safetensors"):  # a fresh checkout or copy: new times, the same bytes
        os.utime(weights, ns=(0, 0))
    decoded.clear()
    monkeypatch.setattr(llm_eval, "evaluate_rows", lambda *a, **k: (decoded.extend(a[2].row_ids.tolist()),
                                                                      real(*a, **k))[1])
    record = llm_eval.evaluate_llm_run(run, limit=5, beams=2, batch_size=2)
    assert decoded == [2, 3, 4]  # only the rows the killed call had not saved
    assert record["metrics"] == uninterrupted["metrics"]
    assert (run / "predictions_test.jsonl").read_text() == expected_predictions
    assert not (run / "decode_test.partial.json").exists()


def test_train_never_deletes_what_it_did_not_write_and_refuses_before_making_a_folder(small_config, tmp_path, capsys):
    from tca4rec.cli import main

    def fails(argv, needle):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err

    user = tmp_path / "userdir"
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("precious")
    (user / "config.json").write_text('{"format": "tca4rec.llm_run/1", "config": {}}')  # looks like a run
    fails([*cli_train_args(small_config(user)), "--overwrite"], "notes.txt")
    assert (user / "notes.txt").read_text() == "precious" and (user / "sub").is_dir()
    afile = tmp_path / "afile"
    afile.write_text("precious")
    fails([*cli_train_args(small_config(afile)), "--overwrite"], "is a file")
    assert afile.read_text() == "precious"
    # Refused options leave no folder behind, so the retry needs no --overwrite.
    fresh = tmp_path / "fresh"
    fails([*cli_train_args(small_config(fresh)), "--lora-targets", "no_such_module"], "no_such_module")
    fails([*cli_train_args(small_config(fresh)), "--temperature", "inf"], "--temperature inf")
    assert not fresh.exists()


def test_a_run_kept_without_its_title_tokens_rebuilds_them_and_decodes_the_same(reference_run, tmp_path):
    """Committed study cells keep their adapter but not ct.safetensors (derived from the catalog
    and the tokenizer, both fingerprinted): loading rebuilds it, and decoding is unchanged."""
    import shutil

    from tca4rec.llm.evaluate import evaluate_llm_run
    from tca4rec.llm.run import CT_FILE

    _, run = reference_run
    kept = tmp_path / "kept"
    shutil.copytree(run, kept, ignore=shutil.ignore_patterns("checkpoints", "metrics_*", "predictions_*"))
    (kept / CT_FILE).unlink()
    full = evaluate_llm_run(run, limit=3, beams=2)
    rebuilt = evaluate_llm_run(kept, limit=3, beams=2)
    assert rebuilt["metrics"] == full["metrics"]
    assert (kept / "predictions_test.jsonl").read_text() == (run / "predictions_test.jsonl").read_text()


def test_a_damaged_run_is_a_one_line_error_naming_the_file(reference_run, tmp_path, capsys):
    """A cut adapter, wrong types in config.json, checkpoint state replaced by a pickle (issue 36):
    each is one line naming the file (and the field), not a traceback; the pickle is never run."""
    import dataclasses
    import pickle
    import shutil

    from tca4rec.cli import main
    from tca4rec.data import load_dataset
    from tca4rec.llm.train import JsonlLogCallback, latest_checkpoint, train

    config, run = reference_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)

    def one_line(argv, *needles) -> str:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert all(needle in err for needle in needles), err
        return err

    recommend = ["recommend", "--run", str(copy), "--history", load_dataset(config.data).titles[1], "--k", "2"]
    adapter = copy / "adapter" / "adapter_model.safetensors"
    whole = adapter.read_bytes()
    for size in (1000, 0):
        adapter.write_bytes(whole[:size])
        one_line(recommend, str(adapter), "not a readable safetensors file")
    adapter.write_bytes(whole)

    record_path = copy / "config.json"
    record = json.loads(record_path.read_text())
    for change, needle in (({"config": {**record["config"], "lora_r": "eight"}}, "field 'config.lora_r': 'eight'"),
                           ({"config": {**record["config"], "host": ["tallrec"]}}, "field 'config.host'"),
                           ({"config": {**record["config"], "host": "nope"}}, "host nope: unknown host"),
                           ({"num_items": "abc"}, "field 'num_items': 'abc' is not an integer")):
        record_path.write_text(json.dumps({**record, **change}))
        assert "--" not in one_line(recommend, str(record_path), needle)  # a field of the file, not an option
    for damaged in (b'{"format": "\xff"}', b"[" * 100_000):  # not UTF-8; nested past the JSON reader's depth
        record_path.write_bytes(damaged)
        one_line(recommend, str(record_path), "is not valid JSON")
    record_path.write_text(json.dumps(record))

    log = copy / "train_log.jsonl"
    kept = log.read_bytes()
    log.write_bytes(kept + b"{oops\n")  # read back by train --resume
    bad_line = len(kept.splitlines()) + 1
    with pytest.raises(RunError, match=f"{log}, line {bad_line} is not JSON"):
        train(dataclasses.replace(config, out=str(copy)), resume=True)
    for damaged, needle in ((b"[1, 2]\n", ", line 1 is not a record (a JSON object); repair or remove it to resume"),
                            (b"{}\n\xff\n", ", line 2 is not UTF-8 text; repair or remove it to resume")):
        log.write_bytes(damaged)
        with pytest.raises(RunError, match=re.escape(f"{log}{needle}")):
            JsonlLogCallback(log).on_train_begin(None, SimpleNamespace(global_step=0), None)
    log.write_bytes(kept)

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    checkpoint = latest_checkpoint(copy)
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        kept = (checkpoint / name).read_bytes()
        (checkpoint / name).write_bytes(pickle.dumps(Payload()))
        with pytest.raises(RunError, match=f"{checkpoint / name} is not a loadable checkpoint file"):
            train(dataclasses.replace(config, out=str(copy)), resume=True)
        (checkpoint / name).write_bytes(kept)
    assert not marker.exists()


def test_a_run_another_process_trains_or_decodes_is_refused(reference_run, small_config, tmp_path):
    import shutil

    from tca4rec.io import exclusive_use
    from tca4rec.llm.evaluate import evaluate_llm_run
    from tca4rec.llm.train import train

    config = small_config(tmp_path / "new")
    with exclusive_use(config.out, "train"):
        with pytest.raises(RunError, match=r"new is in use: another tca4rec process \(pid \d+\) is running train"):
            train(config)
    assert not Path(config.out).exists()  # refused before anything was made

    run = tmp_path / "run"
    shutil.copytree(reference_run[1], run)
    with exclusive_use(run, "evaluate test"):
        with pytest.raises(RunError, match="is running evaluate test on it"):
            evaluate_llm_run(run, limit=2, beams=2)
        assert evaluate_llm_run(run, split="valid", limit=2, beams=2)["rows"] == 2  # another decoding: allowed
    assert evaluate_llm_run(run, limit=2, beams=2)["rows"] == 2
