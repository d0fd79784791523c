"""``tca4rec bench align``: soft-label speed and loss memory on a real catalog, in one process.

Speed: ``CollaborativeTokenizer.soft_labels`` against the per-sample, per-position
formulation of the released TCA4Rec code (a dict trie whose nodes list every
(next token, item) pair below them; for each position: look the prefix up, softmax the
items' CF logits, scatter-add them into a vocabulary-sized row). Same random CF logits
and targets; the two outputs are checked equal before any time is reported. Ours is timed
twice: from item-order logits (what the baseline gets) and from the same logits in trie
order (what training feeds it, ``Signals.cf_signals(trie_order=True)``).

Memory: peak bytes allocated by tensors during labels + loss + backward, against plain
cross-entropy on the same logits, read from the profiler's allocation events (CPU). The
logits themselves exist before the measurement and are not counted.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from tca4rec.align import CollaborativeTokenizer, SoftLabels, soft_ntp_loss
from tca4rec.bench import write_result
from tca4rec.data import load_dataset
from tca4rec.errors import ConfigError
from tca4rec.llm.model import load_tokenizer
from tca4rec.llm.prompts import title_token_ids


class ReleasedPairsTrie:
    """The released code's trie: prefix tuple -> (next tokens, items) of every item below it."""

    def __init__(self, item_token_ids: Sequence[Sequence[int]], eos_token_id: int) -> None:
        self.pairs: dict[tuple[int, ...], tuple[list[int], list[int]]] = {}
        for item, title in enumerate(item_token_ids):
            seq = list(title) + [eos_token_id]
            for k, token in enumerate(seq):
                tokens, items = self.pairs.setdefault(tuple(seq[:k]), ([], []))
                tokens.append(token)
                items.append(item)

    def soft_labels(self, cf_logits: torch.Tensor, target_tokens: torch.Tensor, alpha: float,
                    vocab_size: int) -> torch.Tensor:
        """Dense [B, L, V] labels, one Python step per sample and position (the baseline)."""
        b, length = target_tokens.shape
        collab = torch.zeros(b, length, vocab_size)
        for row in range(b):
            seq = target_tokens[row]
            for k in range(int((seq >= 0).sum())):
                tokens, items = self.pairs[tuple(t.item() for t in seq[:k])]
                tokens, items = torch.tensor(tokens), torch.tensor(items)
                probs = cf_logits[row, items].softmax(-1)
                collab[row, k] = torch.zeros(vocab_size).scatter_add_(0, tokens, probs)
        real = target_tokens >= 0
        onehot = F.one_hot(target_tokens.clamp(min=0), vocab_size).float() * real[..., None]
        return (1 - alpha) * onehot + alpha * collab


def median_seconds(fns: Sequence[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time of each function; runs alternate so that machine load hits all alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: the profiler's C++ side logs start/stop lines there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_tensor_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes held by tensors allocated inside ``fn`` (CPU allocator events), net of what existed before."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with native_stderr_silenced(), torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    return max(itertools.accumulate((e.nbytes() for e in events), initial=0))


def run_bench(item_token_ids: Sequence[Sequence[int]], eos_token_id: int, vocab_size: int, batch: int,
              repeats: int, alpha: float, seed: int) -> dict:
    """All measurements as one JSON-ready dict (seconds, bytes, ratios)."""
    start = time.perf_counter()
    tokenizer = CollaborativeTokenizer(item_token_ids, eos_token_id)
    build_s = time.perf_counter() - start
    released = ReleasedPairsTrie(item_token_ids, eos_token_id)

    gen = torch.Generator().manual_seed(seed)
    cf_logits = torch.randn(batch, tokenizer.num_items, generator=gen) * 3
    targets = torch.randint(0, tokenizer.num_items, (batch,), generator=gen)
    # The baseline reads the target titles as the released code does: token ids + EOS, padded.
    target_seqs = [list(item_token_ids[t]) + [eos_token_id] for t in targets.tolist()]
    target_tokens = torch.full((batch, max(map(len, target_seqs))), -100)
    for row, seq in enumerate(target_seqs):
        target_tokens[row, : len(seq)] = torch.tensor(seq)

    labels = tokenizer.soft_labels(cf_logits, targets, alpha=alpha)
    reference = released.soft_labels(cf_logits, target_tokens, alpha, vocab_size)
    max_abs_diff = float((labels.to_dense(vocab_size) - reference.double()).abs().max())
    if max_abs_diff > 1e-6:  # a bug, not bad input: no timing is worth reporting then
        raise RuntimeError(f"soft labels differ from the released formulation by {max_abs_diff:.3g}")

    # Training hands the logits over in trie order (Signals.cf_signals): the same labels without the gather.
    trie_logits = cf_logits[:, tokenizer.trie.order].contiguous()
    if not torch.equal(tokenizer.soft_labels(trie_logits, targets, alpha=alpha, trie_order=True).weight,
                       labels.weight):
        raise RuntimeError("soft labels from trie-order logits differ from those of item-order logits")
    ours_s, trie_s, released_s = median_seconds(
        [lambda: tokenizer.soft_labels(cf_logits, targets, alpha=alpha),
         lambda: tokenizer.soft_labels(trie_logits, targets, alpha=alpha, trie_order=True),
         lambda: released.soft_labels(cf_logits, target_tokens, alpha, vocab_size)], repeats)

    b, length = labels.shape
    logits = torch.randn(b, length, vocab_size, generator=gen, requires_grad=True)

    def plain_ce() -> None:
        F.cross_entropy(logits.reshape(-1, vocab_size), labels.targets.reshape(-1), ignore_index=-100).backward()
        logits.grad = None

    def soft(masked: bool, tau: float) -> Callable[[], None]:
        def step() -> None:
            fresh: SoftLabels = tokenizer.soft_labels(cf_logits, targets, alpha=alpha)
            soft_ntp_loss(logits, fresh, masked=masked, tau=tau).backward()
            logits.grad = None
        return step

    logits_bytes = b * length * vocab_size * 4  # also the size of one dense float32 label tensor
    memory = {"plain_ce": peak_tensor_bytes(plain_ce),
              "soft_mixture": peak_tensor_bytes(soft(False, 1.0)),
              "soft_mixture_masked": peak_tensor_bytes(soft(True, 4.5))}
    return {
        "items": tokenizer.num_items, "trie_nodes": tokenizer.trie.num_nodes, "vocab_size": vocab_size,
        "batch": b, "positions": length, "label_entries": int(labels.position.numel()),
        "alpha": alpha, "seed": seed, "repeats": repeats, "threads": torch.get_num_threads(),
        "build_s": build_s, "labels_s": ours_s, "labels_trie_order_s": trie_s, "released_labels_s": released_s,
        "speedup": released_s / ours_s, "speedup_trie_order": released_s / trie_s, "max_abs_diff": max_abs_diff,
        "logits_bytes": logits_bytes, "peak_bytes": memory,
        "peak_vs_plain_ce": {k: v / memory["plain_ce"] for k, v in memory.items()},
    }


def _format(result: dict) -> str:
    lines = [
        f"catalog: {result['items']} items, {result['trie_nodes']} trie nodes; batch {result['batch']} x "
        f"{result['positions']} positions, {result['label_entries']} label entries; "
        f"{result['threads']} thread(s), median of {result['repeats']}",
        f"trie + tokenizer build          {result['build_s'] * 1e3:10.1f} ms",
        f"soft labels, released per-position {result['released_labels_s'] * 1e3:7.1f} ms",
        f"soft labels, this implementation {result['labels_s'] * 1e3:8.2f} ms   speedup {result['speedup']:.0f}x "
        f"(max abs diff {result['max_abs_diff']:.1e})",
        f"  from trie-order logits (training) {result['labels_trie_order_s'] * 1e3:6.2f} ms   speedup "
        f"{result['speedup_trie_order']:.0f}x (same labels)",
        f"peak tensor bytes, forward + backward (logits [B, L, V] float32 = {result['logits_bytes']:,} B):",
    ]
    for name, peak in result["peak_bytes"].items():
        lines.append(f"  {name:<22} {peak:>14,} B   {result['peak_vs_plain_ce'][name]:.2f} x plain CE")
    return "\n".join(lines)


def run(args) -> int:
    if args.batch < 1 or args.repeats < 1 or args.threads < 1:
        raise ConfigError("--batch, --repeats and --threads must be at least 1")
    if not 0.0 <= args.alpha <= 1.0:
        raise ConfigError(f"--alpha must be in [0, 1], got {args.alpha}")
    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data)
    text_tokenizer = load_tokenizer(args.llm)
    item_token_ids = title_token_ids(text_tokenizer, dataset.titles[1:])  # item column j = item id j + 1
    result = run_bench(item_token_ids, text_tokenizer.eos_token_id, len(text_tokenizer), args.batch,
                       args.repeats, args.alpha, args.seed)
    result["data"] = str(args.data)
    print(_format(result))
    if args.out:
        write_result(args.out, "align", result)
    return 0
