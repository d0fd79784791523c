"""``tca4rec bench train``: LoRA training throughput with rows grouped by length against
random batching, the same rows, model and steps in the same process, and against the machine.

Rows differ in prompt length (history titles) and title length; a random batch is padded to
its longest row, and on a CPU near its compute ceiling every pad position costs as much as a
real token. Grouping rows of similar length (``TrainConfig.group_by_length``, the default)
wastes fewer FLOPs. Reported per mode: seconds per optimizer step, real (non-pad) tokens per
step and per second, the share of computed positions that were real, and the speed-up in real
tokens per second. Model loading and the process's first step are excluded from the timings.
Grouping regroups rows within mega-batches of about four batches (transformers'
``get_length_grouped_indices``): with fewer than four batches of rows (``--steps`` x
``--batch-size``) both modes see the same batches and only the utilization figures mean much.

Against the machine: the **model FLOP/s** each mode achieves (``training_flops``: forward and
backward of the real tokens only, through the frozen base with LoRA, the output layer on the
title positions only, counted from the model's shapes; padding, optimizer and loss arithmetic
count nothing), and the **peak** the same process measures for the model's largest matmul
(real tokens of a step x hidden -> MLP width) on the same device, twice after the runs.
Their ratio is the utilization: what a faster kernel or less padding could still win.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig
from transformers.pytorch_utils import Conv1D

from tca4rec.bench import write_result
from tca4rec.errors import ConfigError
from tca4rec.llm.config import TrainConfig
from tca4rec.llm.model import resolve_llm
from tca4rec.llm.train import build_trainer, row_lengths


def linear_shapes(llm: nn.Module) -> tuple[int, int]:
    """Sum of in x out over the matmuls every token runs (output layer excluded): (frozen, trainable)."""
    head = llm.get_output_embeddings()
    frozen = trainable = 0
    for module in llm.modules():
        if isinstance(module, (nn.Linear, Conv1D)) and module is not head:
            size = module.weight.numel()  # in x out (peft's LoRA A and B are Linear modules of their own)
            if module.weight.requires_grad:
                trainable += size
            else:
                frozen += size
    return frozen, trainable


def training_flops(llm: nn.Module, fed: Sequence[int], kept: Sequence[int]) -> dict[str, float]:
    """Model FLOPs of one forward and backward pass of rows feeding ``fed[r]`` real tokens, the
    output layer on ``kept[r]`` of them (the title positions), with frozen base weights: the
    forward's, the backward's, their total and the forward's attention part.

    Per token and weight matrix [in, out]: 2 in out forward; backward 2 in out for the input's
    gradient, plus 2 in out for the weight's gradient where it trains (LoRA). Attention per layer
    and head: 4 Dh per causal (query, key) pair forward (scores and weighted values), twice that
    backward. The output layer [d, V] on kept positions: forward, and its input's gradient.
    """
    frozen, trainable = linear_shapes(llm)
    config = llm.get_base_model().config if hasattr(llm, "get_base_model") else llm.config
    text = config.get_text_config(decoder=True)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    head = llm.get_output_embeddings().weight  # [V, d]
    tokens = float(sum(fed))
    pairs = float(sum(n * (n + 1) // 2 for n in fed))  # causal (query, key) pairs of the real tokens
    attention = 4.0 * pairs * text.num_hidden_layers * text.num_attention_heads * head_dim
    output = 2.0 * float(sum(kept)) * head.numel()
    forward = 2.0 * tokens * (frozen + trainable) + attention + output
    backward = 2.0 * tokens * (frozen + 2 * trainable) + 2 * attention + output
    return {"forward": forward, "backward": backward, "total": forward + backward, "attention": attention}


def matmul_peak(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device | str,
                seconds: float = 1.0) -> float:
    """FLOP/s of [m, k] @ [k, n] on ``device``, repeated for about ``seconds`` after a warm-up."""
    a = torch.randn(m, k, dtype=dtype, device=device)
    b = torch.randn(k, n, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    a @ b
    sync()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        sync()
        done += 1
    return 2.0 * m * k * n * done / (time.perf_counter() - start)


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
    # The run is one pass over its train_limit rows: the same rows, whatever their order.
    host = trainer.model
    rows = trainer.tca.dataset.split("train").head(config.train_limit)
    kept = (host.target_tokens[torch.as_tensor(rows.targets) - 1] >= 0).sum(1).tolist()  # title + EOS
    fed = [n - 1 for n in row_lengths(host, rows)]  # prompt + title tokens, the last (EOS) not fed
    flops = training_flops(host.llm, fed, kept)["total"]
    result = {"group_by_length": config.group_by_length, "steps": steps, "seconds": seconds,
              "seconds_per_step": seconds / steps, "real_tokens_per_step": real / steps,
              "real_tokens_per_s": real / seconds, "real_token_share": share,
              "model_flops": flops, "model_flops_per_s": flops / seconds,
              "tokens_per_step": sum(fed) / steps, "hidden": host.llm.get_input_embeddings().embedding_dim,
              "dtype": str(next(host.llm.parameters()).dtype).removeprefix("torch."),
              "device": str(trainer.args.device)}
    log(f"  group_by_length={config.group_by_length}: {result['seconds_per_step']:.2f} s/step, "
        f"{result['real_tokens_per_step']:.0f} real tokens/step, {result['real_tokens_per_s']:.0f} real tokens/s, "
        f"{100 * share:.1f}% of computed positions real, {flops / seconds / 1e9:.1f} model GFLOP/s")
    return result


def mlp_width(llm_name: str | None) -> int:
    """The MLP width of the model (the largest matmul a token runs), from its config alone."""
    config = AutoConfig.from_pretrained(resolve_llm(llm_name), local_files_only=True).get_text_config(decoder=True)
    width = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or getattr(
        config, "ffn_dim", None)
    return int(width or 4 * config.hidden_size)


def run(args: argparse.Namespace) -> int:
    if args.steps < 1 or args.batch_size < 1:
        raise ConfigError("--steps and --batch-size must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        configs = [TrainConfig(data=args.data, out=str(Path(tmp) / f"grouped-{grouped}"), llm=args.llm or "smollm2-135m",
                               host="tallrec", alpha=0.0, batch_size=args.batch_size, grad_accum=1,
                               max_steps=args.steps, train_limit=args.steps * args.batch_size, eval_rows=0,
                               save_steps=args.steps, logging_steps=1, group_by_length=grouped, seed=args.seed)
                   for grouped in (False, True)]
        # The process's first training step pays one-time costs (thread pools, allocator, lazy
        # initialisation: about twice a step on this CPU); a step not measured takes them off
        # whichever mode would run first.
        measure(dataclasses.replace(configs[0], out=str(Path(tmp) / "warm-up"), max_steps=1, save_steps=1,
                                    train_limit=args.batch_size), log=lambda _: None)
        results = [measure(config) for config in configs]
    base, grouped = results
    # The peak of the model's largest matmul at a step's real tokens, on the device and dtype the
    # runs used, before and after them (the machine's load may change meanwhile).
    shape = (round(grouped["tokens_per_step"]), grouped["hidden"], mlp_width(args.llm))
    dtype, device = getattr(torch, grouped["dtype"]), grouped["device"]
    peaks = [matmul_peak(*shape, dtype, device) for _ in range(2)]
    peak = max(peaks)
    speedup = grouped["real_tokens_per_s"] / base["real_tokens_per_s"]
    print(f"length grouping: {speedup:.2f}x real tokens/s against random batches "
          f"({base['seconds_per_step']:.2f} -> {grouped['seconds_per_step']:.2f} s per step of {args.batch_size} rows, "
          f"real share {100 * base['real_token_share']:.1f}% -> {100 * grouped['real_token_share']:.1f}%)")
    print(f"model FLOP/s (forward + backward of the real tokens): {base['model_flops_per_s'] / 1e9:.1f} GFLOP/s random, "
          f"{grouped['model_flops_per_s'] / 1e9:.1f} GFLOP/s grouped; peak of a [{shape[0]} x {shape[1]}] @ "
          f"[{shape[1]} x {shape[2]}] {dtype} matmul on {device}: {peak / 1e9:.1f} GFLOP/s "
          f"(measured {', '.join(f'{p / 1e9:.1f}' for p in peaks)}); utilization "
          f"{100 * base['model_flops_per_s'] / peak:.0f}% random, {100 * grouped['model_flops_per_s'] / peak:.0f}% grouped")
    if args.out:
        write_result(args.out, "train", {"random": base, "grouped": grouped, "speedup_real_tokens_per_s": speedup,
                                           "peak_flops_per_s": peak, "peak_measurements": peaks,
                                           "peak_matmul": list(shape),
                                           "utilization": {"random": base["model_flops_per_s"] / peak,
                                                           "grouped": grouped["model_flops_per_s"] / peak},
                                           "data": args.data, "batch_size": args.batch_size, "steps": args.steps})
        print(f"wrote {args.out}")
    return 0
