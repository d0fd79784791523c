"""``tca4rec bench serve URL``: throughput and latency of a running ``tca4rec serve`` under concurrent load.

``--concurrency`` clients each send their next request as soon as the last is answered,
until ``--requests`` have been sent. Histories are seeded random item ids, ``--history-len``
of them (default: the server's history width), so every request is valid and costs what a
full history costs. Bounded on purpose: at most ``MAX_REQUESTS`` requests, none started after
``--max-seconds``, each abandoned after ``--timeout``, and only a loopback URL (127.0.0.0/8,
::1, localhost): this measures a replica on this machine, it is not a load generator.

Reported: answered and failed requests (by status or exception), wall time, throughput
(answered requests per second), latency p50/p95/p99 of the answered ones, and the server's
own counters over the run (decode calls, rows per call: how much micro-batching happened).
Absolute figures depend on the machine and its load; compare servers measured the same way
in the same session (``--max-batch 16`` against ``--max-batch 1``, say).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
import urllib.parse
from collections import Counter

import httpx
import numpy as np

from tca4rec.bench import write_result
from tca4rec.errors import ConfigError

MAX_REQUESTS = 100_000
MAX_CONCURRENCY = 1_024


def check_loopback(url: str) -> str:
    """``url`` without a trailing slash, if it is http(s) on a loopback address; a ConfigError otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"URL {url!r}: give the server's address, e.g. http://127.0.0.1:8000")
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"URL {url!r}: bench serve only measures a server on this machine "
                          "(127.0.0.1, ::1, localhost)")
    return url.rstrip("/")


def request_bodies(info: dict, count: int, history_len: int | None, k: int, seed: int) -> list[dict]:
    """``count`` valid requests: random item-id histories of ``history_len`` items (default: the model's width)."""
    length = history_len or int(info["history_width"])
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, int(info["items"]) + 1, size=(count, length))
    return [{"history": row.tolist(), "k": k} for row in ids]


async def _send_all(url: str, bodies: list[dict], concurrency: int, max_seconds: float,
                    timeout: float) -> tuple[list[tuple[float, str]], float]:
    """(latency in s, outcome: "200" or another status or an exception name) of each sent request; wall time."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    results: list[tuple[float, str]] = []
    sent = 0
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        start = time.perf_counter()

        async def client_loop() -> None:
            nonlocal sent
            while sent < len(bodies) and time.perf_counter() - start < max_seconds:
                body = bodies[sent]
                sent += 1
                began = time.perf_counter()
                try:
                    outcome = str((await client.post("/v1/recommend", json=body)).status_code)
                except httpx.HTTPError as e:
                    outcome = type(e).__name__
                results.append((time.perf_counter() - began, outcome))

        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        return results, time.perf_counter() - start


def run_bench(url: str, requests: int, concurrency: int, *, k: int = 10, history_len: int | None = None,
              warmup: int = 1, max_seconds: float = 300.0, timeout: float = 600.0, seed: int = 0) -> dict:
    """Measure ``url``; returns the figures ``_format`` prints (and ``--out`` stores)."""
    url = check_loopback(url)
    if not 1 <= requests <= MAX_REQUESTS:
        raise ConfigError(f"--requests {requests}: must be in 1..{MAX_REQUESTS}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ConfigError(f"--concurrency {concurrency}: must be in 1..{MAX_CONCURRENCY}")
    if not (max_seconds > 0 and timeout > 0) or warmup < 0:
        raise ConfigError("--max-seconds and --timeout must be > 0, --warmup >= 0")
    try:
        info = httpx.get(f"{url}/v1/info", timeout=timeout).raise_for_status().json()
    except httpx.HTTPError as e:
        raise ConfigError(f"no tca4rec server answers at {url} ({type(e).__name__}: {e})") from None
    bodies = request_bodies(info, warmup + requests, history_len, k, seed)
    if warmup:
        asyncio.run(_send_all(url, bodies[:warmup], 1, max_seconds, timeout))
    before = httpx.get(f"{url}/v1/info", timeout=timeout).json()["stats"]
    results, wall = asyncio.run(_send_all(url, bodies[warmup:], concurrency, max_seconds, timeout))
    after = httpx.get(f"{url}/v1/info", timeout=timeout).json()["stats"]
    ok = np.array([latency for latency, outcome in results if outcome == "200"])
    calls, rows = after["calls"] - before["calls"], after["rows"] - before["rows"]
    decode_s = after.get("seconds", 0.0) - before.get("seconds", 0.0)  # 0 from a server without the counter
    return {
        "url": url, "model": info.get("model"), "max_batch": info.get("max_batch"),
        "max_wait_ms": info.get("max_wait_ms"),
        "requests": requests, "sent": len(results), "concurrency": concurrency, "k": k,
        "history_len": len(bodies[0]["history"]), "ok": int(ok.size), "errors": len(results) - int(ok.size),
        "outcomes": dict(Counter(outcome for _, outcome in results)), "wall_s": wall,
        "throughput_rps": ok.size / wall if wall > 0 else 0.0,
        **{f"latency_p{q}_s": float(np.percentile(ok, q)) if ok.size else None for q in (50, 95, 99)},
        "server_decode_calls": calls, "server_rows_per_call": rows / calls if calls else None,
        "server_seconds_per_call": decode_s / calls if calls else None}


def _format(r: dict) -> str:
    def seconds(value) -> str:
        return "-" if value is None else f"{value:.2f} s"

    per_call = "-" if r["server_rows_per_call"] is None else (
        f"{r['server_rows_per_call']:.1f} rows and {r['server_seconds_per_call']:.1f} s per call")
    return (f"bench serve: {r['sent']} of {r['requests']} requests at concurrency {r['concurrency']} against {r['url']} "
            f"(model {r['model']}, max batch {r['max_batch']}, max wait {r['max_wait_ms']:g} ms; histories of "
            f"{r['history_len']} items, k {r['k']})\n"
            f"ok {r['ok']}, errors {r['errors']} {r['outcomes'] if r['errors'] else ''}| {r['wall_s']:.1f} s | "
            f"{r['throughput_rps']:.3f} requests/s | latency p50 {seconds(r['latency_p50_s'])}, "
            f"p95 {seconds(r['latency_p95_s'])}, p99 {seconds(r['latency_p99_s'])} | server: "
            f"{r['server_decode_calls']} decode calls, {per_call}")


def run(args) -> int:
    result = run_bench(args.url, args.requests, args.concurrency, k=args.k, history_len=args.history_len,
                       warmup=args.warmup, max_seconds=args.max_seconds, timeout=args.timeout, seed=args.seed)
    print(_format(result))
    if args.out:
        write_result(args.out, "serve", result)
        print(f"wrote {args.out}")
    return 0
