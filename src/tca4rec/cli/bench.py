"""``tca4rec bench ...``: benchmarks measured as ratios against a baseline in the same process."""

from __future__ import annotations


def register(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks (align, decode, lookahead, scale, train)", description=__doc__)
    group = bench.add_subparsers(dest="bench_command", metavar="BENCH")
    from tca4rec.bench import align, decode, lookahead, scale, train

    align.register(group)
    decode.register(group)
    lookahead.register(group)
    scale.register(group)
    train.register(group)
