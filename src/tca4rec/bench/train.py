"""``tca4rec bench train``: LoRA training throughput with rows grouped by length against
random batching, the same rows, model and steps in the same process.

Rows differ in prompt length (history titles) and title length; a random batch is padded to
its longest row, and on a CPU near its compute ceiling every pad position costs as much as a
real token. Grouping rows of similar length (``TrainConfig.group_by_length``, the default)
wastes fewer FLOPs. Reported per mode: seconds per optimizer step, real (non-pad) tokens per
step and per second, the share of computed positions that were real, and the speed-up in real
tokens per second. Model loading is excluded from the timings.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tca4rec.errors import ConfigError
from tca4rec.io import atomic_write_json
from tca4rec.llm.config import TrainConfig
from tca4rec.llm.train import build_trainer


def measure(config, log=print) -> dict:
    """Train ``config`` (a throwaway run folder) and return its throughput figures."""
    trainer, _ = build_trainer(config, overwrite=True)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    # Logged every step (logging_steps=1): the sum is the run's real tokens.
    logs = [r for r in trainer.state.log_history if "real_tokens_per_step" in r]
    real = sum(r["real_tokens_per_step"] for r in logs) * config.logging_steps
    share = sum(r["real_token_share"] for r in logs) / max(len(logs), 1)
    steps = trainer.state.global_step
    result = {"group_by_length": config.group_by_length, "steps": steps, "seconds": seconds,
              "seconds_per_step": seconds / steps, "real_tokens_per_step": real / steps,
              "real_tokens_per_s": real / seconds, "real_token_share": share}
    log(f"  group_by_length={config.group_by_length}: {result['seconds_per_step']:.2f} s/step, "
        f"{result['real_tokens_per_step']:.0f} real tokens/step, {result['real_tokens_per_s']:.0f} real tokens/s, "
        f"{100 * share:.1f}% of computed positions real")
    return result


def run(args: argparse.Namespace) -> int:
    import torch


    if args.steps < 1 or args.batch_size < 1:
        raise ConfigError("--steps and --batch-size must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for grouped in (False, True):
            config = TrainConfig(data=args.data, out=str(Path(tmp) / f"grouped-{grouped}"), llm=args.llm or "smollm2-135m",
                                 host="tallrec", alpha=0.0, batch_size=args.batch_size, grad_accum=1,
                                 max_steps=args.steps, train_limit=args.steps * args.batch_size, eval_rows=0,
                                 save_steps=args.steps, logging_steps=1, group_by_length=grouped, seed=args.seed)
            results.append(measure(config))
    base, grouped = results
    speedup = grouped["real_tokens_per_s"] / base["real_tokens_per_s"]
    print(f"length grouping: {speedup:.2f}x real tokens/s against random batches "
          f"({base['seconds_per_step']:.2f} -> {grouped['seconds_per_step']:.2f} s per step of {args.batch_size} rows, "
          f"real share {100 * base['real_token_share']:.1f}% -> {100 * grouped['real_token_share']:.1f}%)")
    if args.out:
        atomic_write_json(Path(args.out), {"random": base, "grouped": grouped, "speedup_real_tokens_per_s": speedup,
                                           "data": args.data, "batch_size": args.batch_size, "steps": args.steps})
        print(f"wrote {args.out}")
    return 0
