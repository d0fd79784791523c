"""``tca4rec bench ...``: benchmarks measured as ratios against a baseline in the same process.

The arguments are defined here and each benchmark's module (``tca4rec.bench.*``) is imported
only when it runs, like every command's API: they load torch and transformers. ``bench serve``
loads a running server over HTTP; its baseline is the same server started with
``--max-batch 1`` and measured in the same session.
"""

from __future__ import annotations

import argparse
import importlib

from tca4rec.cli import add_command, seed_arg

OUT_HELP = "also write the results as JSON here (a new file, or one an earlier run of this bench wrote)"


def _runner(name: str):
    """The function of ``tca4rec bench NAME``: its ``--out`` is checked before the (long) measurement."""
    def run(args: argparse.Namespace) -> int:
        from tca4rec.bench import check_out

        if args.out:
            check_out(args.out, name)
        return importlib.import_module(f"tca4rec.bench.{name}").run(args)
    return run


def _align(group) -> None:
    p = add_command(group, "align", _runner("align"),
                    "soft-label speed vs the released per-position code, and loss memory vs plain CE",
                    ("tca4rec bench align --data ../shared/data/amazon2018/Toys_and_Games",
                     "tca4rec bench align --data data/synth --batch 4 --repeats 3 --out bench_align.json"))
    p.add_argument("--data", required=True, help="dataset folder (release format)")
    p.add_argument("--batch", type=int, default=16, help="targets per batch (default 16)")
    p.add_argument("--llm", default=None,
                   help="local Hugging Face model folder whose tokenizer to use (default: SmolLM2-135M)")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions, median reported (default 5)")
    p.add_argument("--alpha", type=float, default=0.1, help="soft-label weight alpha (default 0.1)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the random CF logits and targets")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: stable timings)")
    p.add_argument("--out", default=None, help=OUT_HELP)


def _decode(group) -> None:
    p = add_command(group, "decode", _runner("decode"),
                    "trie-constrained beam search vs HF generate with prefix_allowed_tokens_fn: speed and equality",
                    ("tca4rec bench decode --data ../shared/data/amazon2018/Toys_and_Games --samples 8",
                     "tca4rec bench decode --data data/synth --llm path/to/hf_model --beams 5 --out bench_decode.json"))
    p.add_argument("--data", required=True, help="dataset folder (release format)")
    p.add_argument("--llm", default=None, help="local Hugging Face model folder (default: SmolLM2-135M, base weights)")
    p.add_argument("--samples", type=int, default=8, help="rows decoded, from the first (default 8)")
    p.add_argument("--beams", type=int, default=10, help="beam width = items returned (default 10)")
    p.add_argument("--batch", type=int, default=1, help="prompts per decoding call, both methods (default 1)")
    p.add_argument("--split", default="test", help="split whose rows give the prompts (default test)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: stable timings)")
    p.add_argument("--out", default=None, help=OUT_HELP)
    p.add_argument("--beta", type=float, default=1.0, help="CF weight of the guided search timed (default 1)")
    p.add_argument("--cf-run", default=None, help="CF run whose logits guide (default: seeded random logits)")
    p.add_argument("--cf-lookahead", default="max", metavar="sum|max",
                   help="how the guided search scores a partial title (default %(default)s)")
    p.add_argument("--no-hf", action="store_true", help="skip the (slow) HF generate baseline")
    p.add_argument("--no-copied", action="store_true",
                   help="skip the search with the prompt KV copied per beam (share_prompt_kv=False)")


def _fuse(group) -> None:
    p = add_command(group, "fuse", _runner("fuse"),
                    "the learned fusion: fit time, and the re-ranking's share of a recommend --fusion call",
                    ("tca4rec bench fuse --run runs/tallrec --cf-run runs/sasrec --rows 2000",
                     "tca4rec bench fuse --run runs/tca --rows 200 --recommend 4 --out bench_fuse.json"))
    p.add_argument("--run", required=True, help="LLM run folder (nothing is written there)")
    p.add_argument("--cf-run", default=None, help="CF run of the candidates (default: the run's teacher)")
    p.add_argument("--rows", type=int, default=2000, help="valid rows the fit is timed on (default 2000)")
    p.add_argument("--k", type=int, default=20, help="the CF model's top-K titles per row (default 20)")
    p.add_argument("--beams", type=int, default=10, help="LLM beams per row (default 10)")
    p.add_argument("--recommend", type=int, default=8, help="recommend calls timed, one history each (default 8)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the synthetic beams")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: stable timings)")
    p.add_argument("--out", default=None, help=OUT_HELP)


def _lookahead(group) -> None:
    p = add_command(group, "lookahead", _runner("lookahead"),
                    "fraction of the CF model's own top-k titles a CF-only beam search finds, sum vs max lookahead",
                    ("tca4rec bench lookahead --data ../shared/data/amazon2018/Office_Products --cf-run runs/sasrec",))
    p.add_argument("--data", required=True, help="dataset folder (release format)")
    p.add_argument("--cf-run", required=True, help="CF run whose logits rank the titles")
    p.add_argument("--llm", default=None, help="LLM whose tokenizer builds the title trie (default: SmolLM2-135M)")
    p.add_argument("--split", default="valid", help="split whose rows are scored (default valid; test is refused)")
    p.add_argument("--rows", type=int, default=20, help="first N rows of the split (default 20)")
    p.add_argument("--width", type=int, default=10, help="beam width (default 10)")
    p.add_argument("--k", type=int, default=10, help="top-k titles to find (default 10)")
    p.add_argument("--out", default=None, help=OUT_HELP)


def _scale(group) -> None:
    p = add_command(group, "scale", _runner("scale"), "time and memory of each alignment stage against catalog size",
                    ("tca4rec bench scale --items 20000,200000,1000000",
                     "tca4rec bench scale --items 1000,5000 --repeats 2 --out bench_scale.json"))
    p.add_argument("--items", default="20000,200000,1000000", help="comma-separated catalog sizes")
    p.add_argument("--batch", type=int, default=16, help="targets per soft-label batch (default 16)")
    p.add_argument("--rows", type=int, default=64, help="rows ranked by the CF model per size (default 64)")
    p.add_argument("--llm", default=None, help="local model folder whose tokenizer to use (default: SmolLM2-135M)")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions, median reported (default 5)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the catalog, logits and models")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: stable timings)")
    p.add_argument("--out", default=None, help=OUT_HELP)


def _train(group) -> None:
    p = add_command(group, "train", _runner("train"),
                    "LoRA training throughput: rows grouped by length vs random batches (real tokens/s), "
                    "model FLOP/s and their share of the measured matmul peak",
                    ("tca4rec bench train --data ../shared/data/amazon2018/Office_Products --steps 8 --batch-size 16",
                     "tca4rec bench train --data data/synth --llm path/to/hf_model --out bench_train.json"))
    p.add_argument("--data", required=True, help="dataset folder (release format)")
    p.add_argument("--llm", default=None, help="local Hugging Face model folder (default: the embedded SmolLM2-135M)")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per mode (default 8)")
    p.add_argument("--batch-size", type=int, default=16, dest="batch_size", help="rows per step (default 16)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default=None, help=OUT_HELP)


def _serve(group) -> None:
    p = add_command(group, "serve", _runner("serve"),
                    "throughput and p50/p95/p99 latency of a running `tca4rec serve` (loopback)",
                    ("tca4rec bench serve http://127.0.0.1:8000 --requests 64 --concurrency 16",
                     "tca4rec bench serve http://127.0.0.1:8000 --requests 8 --concurrency 1 --out bench_c1.json"))
    p.add_argument("url", help="the server's address (loopback only), e.g. http://127.0.0.1:8000")
    p.add_argument("--requests", type=int, default=64, help="requests to send, warm-up excluded (default 64)")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight at once (default 16)")
    p.add_argument("--k", type=int, default=10, help="items per request (default 10)")
    p.add_argument("--history-len", type=int, dest="history_len",
                   help="items per history (default: the server's history width)")
    p.add_argument("--warmup", type=int, default=1, help="requests sent first, one at a time, not counted (default 1)")
    p.add_argument("--max-seconds", type=float, default=300.0, dest="max_seconds",
                   help="send no new request after this many seconds (default 300)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before a request is abandoned (default 600)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the random histories")
    p.add_argument("--out", default=None, help=OUT_HELP)


def register(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks (align, decode, fuse, lookahead, scale, serve, train)",
                           description=__doc__)
    group = bench.add_subparsers(dest="bench_command", metavar="BENCH")
    for add in (_align, _decode, _fuse, _lookahead, _scale, _serve, _train):
        add(group)
