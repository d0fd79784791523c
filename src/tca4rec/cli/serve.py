"""``tca4rec serve``: the LLM recommender as an HTTP service (see docs/serve.md)."""

from __future__ import annotations

import argparse

from tca4rec.cli import add_command


def _serve(args: argparse.Namespace) -> int:
    # fastapi/uvicorn/torch load here, not when the CLI starts: every other command would pay for them.
    from tca4rec.serve import ServeConfig, serve

    serve(ServeConfig(run=args.run, cf_run=args.cf_run, beta=args.beta, cf_lookahead=args.cf_lookahead,
                      host=args.host, port=args.port,
                      beams=args.beams, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                      max_history=args.max_history, max_body=args.max_body, access_log=not args.no_access_log,
                      threads=args.threads, fusion=args.fusion))
    return 0


def register(sub) -> None:
    p = add_command(sub, "serve", _serve, "serve an LLM run over HTTP (POST /v1/recommend; API docs at /docs)", (
        "tca4rec serve --run runs/tca",
        "tca4rec serve --run runs/tca --port 8080 --max-batch 16 --max-wait-ms 20",
        "tca4rec serve --run runs/tallrec --cf-run runs/sasrec --beta 1 --host 0.0.0.0",
        "tca4rec serve --run runs/tallrec --fusion   # after `tca4rec fuse fit`; a request may say \"fusion\": false",
        "curl -s localhost:8000/v1/recommend -H 'content-type: application/json' "
        "-d '{\"history\": [\"Uno Card Game\"], \"k\": 5}'",
    ))
    p.add_argument("--run", required=True, help="LLM run folder")
    p.add_argument("--cf-run", metavar="CF_RUN",
                   help="CF run whose logits guide decoding when beta > 0 (default: the run's teacher)")
    p.add_argument("--beta", default="0", metavar="BETA|auto",
                   help="default CF weight for requests that give none (default 0; auto = the tuned one)")
    p.add_argument("--cf-lookahead", default="max", dest="cf_lookahead", metavar="sum|max",
                   help="how guided decoding scores a partial title: its most probable title (max, default) or "
                        "its prefix's CF share (sum)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default %(default)s; 0 = any free port)")
    p.add_argument("--beams", type=int, default=10, help="beam width; requests may ask for k in 1..beams (default 10)")
    p.add_argument("--max-batch", type=int, default=16, dest="max_batch",
                   help="most requests decoded in one beam search call (default %(default)s; 1 = no batching)")
    p.add_argument("--max-wait-ms", type=float, default=20.0, dest="max_wait_ms",
                   help="how long the oldest waiting request waits for others to join its batch (default %(default)s)")
    p.add_argument("--max-history", type=int, default=100, dest="max_history",
                   help="entries accepted in a request's history; the model reads the last ones (default %(default)s)")
    p.add_argument("--max-body", type=int, default=64 * 1024, dest="max_body",
                   help="largest request body in bytes (default %(default)s)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, usually all cores; "
                                               "give each of N replicas on one machine cores / N)")
    p.add_argument("--no-access-log", action="store_true", dest="no_access_log", help="do not log every request")
    p.add_argument("--fusion", action="store_true",
                   help="load the run's learned fusion (`tca4rec fuse fit`; --cf-run names its CF run if it moved): "
                        "requests rank by it unless they send \"fusion\": false")
