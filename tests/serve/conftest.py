"""Fixtures of the service tests: tiny trained runs, and real server processes on 127.0.0.1.

- ``teacher_run``: a tiny Llama TCA4Rec run whose teacher is a SASRec run (so beta > 0 works);
- ``short_context_run``: a tiny GPT-2 (learned positions, a 128-token context) trained on
  rows with one-item histories, without any CF run. A history of five or more titles makes a
  prompt longer than its context: bad input (the service's 422, a bad row of batch scoring),
  refused before the position table would fail deep inside torch.
- ``start_server``: ``tca4rec serve --port 0`` in a subprocess, its URL read from the ready line.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
READY = re.compile(r"ready at (http://\S+)")
START_TIMEOUT_S = 300  # a bound on a broken start-up, not a timing assertion


def server_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="session")
def serve_cf_run(synth_dataset, tmp_path_factory) -> Path:
    from tca4rec.cf import train_cf

    return train_cf(synth_dataset, "sasrec", tmp_path_factory.mktemp("serve_cf") / "sasrec", epochs=1, limit=200,
                    progress=False)


@pytest.fixture(scope="session")
def teacher_run(synth_dir, tiny_llm_dir, serve_cf_run, tmp_path_factory) -> Path:
    from tca4rec.llm.config import TrainConfig
    from tca4rec.llm.train import train

    return train(TrainConfig(data=str(synth_dir), out=str(tmp_path_factory.mktemp("serve_runs") / "tca"),
                             llm=str(tiny_llm_dir), cf=str(serve_cf_run), alpha=0.1, max_steps=1, save_steps=1,
                             eval_rows=0, batch_size=2, grad_accum=1, train_limit=8, logging_steps=1))


@pytest.fixture(scope="session")
def short_context_run(synth_dataset, tokenizer, tmp_path_factory) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from tca4rec.data import save_dataset
    from tca4rec.llm.config import TrainConfig
    from tca4rec.llm.train import train

    root = tmp_path_factory.mktemp("short_context")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=128,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    train_rows = synth_dataset.split("train")
    lengths = train_rows.history_lengths
    # Eight rows with one-item histories (prompts of about 60 tokens) are trained on; a last, unused row
    # with a full history keeps the split's history width, so that requests may send long histories.
    rows = np.concatenate([np.flatnonzero(lengths == 1)[:8], np.flatnonzero(lengths == lengths.max())[:1]])
    split = dataclasses.replace(train_rows, users=train_rows.users[rows], histories=train_rows.histories[rows],
                                targets=train_rows.targets[rows], timestamps=train_rows.timestamps[rows])
    data = save_dataset(dataclasses.replace(synth_dataset, splits={
        name: dataclasses.replace(split, name=name) for name in ("train", "valid", "test")}), root / "data")
    return train(TrainConfig(data=str(data), out=str(root / "run"), llm=str(root / "llm"), alpha=0.0, max_steps=1,
                             save_steps=1, eval_rows=0, batch_size=2, grad_accum=1, logging_steps=1, train_limit=8))


@dataclasses.dataclass
class ServerProcess:
    proc: subprocess.Popen
    url: str
    log: Path

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kwargs)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_server(run: Path, log: Path, *options: str):
    """A ``tca4rec serve`` process on a free port of 127.0.0.1; stopped (SIGTERM, then SIGKILL) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tca4rec.cli", "serve", "--run", str(run), "--host", "127.0.0.1",
                                 "--port", "0", "--no-access-log", *options],
                                env=server_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (found := READY.search(log.read_text(errors="replace"))):
            assert proc.poll() is None, f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no ready line:\n{log.read_text()[-3000:]}"
            time.sleep(0.05)
        yield ServerProcess(proc, found.group(1), log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def teacher_server(teacher_run, tmp_path_factory):
    """The teacher run served with small limits (batches gather for up to 100 ms, so concurrent requests meet)."""
    log = tmp_path_factory.mktemp("teacher_server") / "serve.log"
    with running_server(teacher_run, log, "--max-batch", "8", "--max-wait-ms", "100", "--max-history", "20",
                        "--max-body", "4096") as server:
        yield server


@pytest.fixture(scope="session")
def loaded_teacher_run(teacher_run):
    from tca4rec.llm.run import load_llm_run

    return load_llm_run(teacher_run)
