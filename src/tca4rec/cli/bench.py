"""``tca4rec bench ...``: benchmarks measured as ratios against a baseline in the same process.

``bench serve`` is the exception: it loads a running server over HTTP; its baseline is the same
server started with ``--max-batch 1`` and measured in the same session.
"""

from __future__ import annotations


def register(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks (align, decode, scale, serve, train)", description=__doc__)
    group = bench.add_subparsers(dest="bench_command", metavar="BENCH")
    from tca4rec.bench import align, decode, scale, serve, train

    align.register(group)
    decode.register(group)
    scale.register(group)
    serve.register(group)
    train.register(group)
