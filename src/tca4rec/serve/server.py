"""Start the service: load the run once, bind the port, warm up, serve with uvicorn until SIGTERM/SIGINT.

Start-up order: options are checked, the run is loaded (the slow part) with, under
``--fusion``, its learned fusion (refused in one line if it belongs to another CF model,
catalog or weights), the port is bound (a busy port is a one-line error), one history is
decoded to warm the model up (and to fail before accepting traffic if the model cannot decode
at all), then uvicorn starts and the log says ``ready at http://HOST:PORT``.

Shutdown (SIGTERM or Ctrl-C): ``/healthz`` and new recommend requests answer 503 at once
(a load balancer takes the replica out), uvicorn stops accepting connections, requests in
flight are decoded and answered, the batcher ends, and the process exits with status 0.
"""

from __future__ import annotations

import copy
import logging
import logging.config
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import uvicorn
from uvicorn.config import LOGGING_CONFIG

import tca4rec
from tca4rec.align.guidance import DEFAULT_CF_LOOKAHEAD
from tca4rec.errors import ConfigError, RunError
from tca4rec.fuse.recommend import FusedRecommender
from tca4rec.fuse.store import load_fusion
from tca4rec.llm.decoding import TEACHER, read_tuned_beta
from tca4rec.llm.recommend import Recommender
from tca4rec.llm.run import load_llm_run
from tca4rec.serve.app import Limits, ServerState, create_app, decode_modes
from tca4rec.serve.batcher import MicroBatcher, one_line

LOG = logging.getLogger("tca4rec.serve")


@dataclass
class ServeConfig:
    run: str
    cf_run: str | None = None
    beta: float | str = 0.0  # default CF weight of requests that give none ("auto": the tuned one)
    cf_lookahead: str = DEFAULT_CF_LOOKAHEAD  # how guided decoding scores a partial title (tca4rec.align.guidance)
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port (the ready line says which)
    beams: int = 10
    max_batch: int = 16
    max_wait_ms: float = 20.0
    max_history: int = Limits.max_history
    max_body: int = Limits.max_body
    access_log: bool = True
    threads: int | None = None  # torch CPU threads (None: torch's choice); replicas sharing a machine split its cores
    fusion: bool = False  # load the run's learned fusion; requests rank by it unless they say "fusion": false

    def check(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port {self.port}: must be in 0..65535")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads {self.threads}: must be >= 1")
        for name in ("beams", "max_batch", "max_history", "max_body"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1")
        if not self.max_wait_ms >= 0:
            raise ConfigError(f"--max-wait-ms {self.max_wait_ms}: must be >= 0")


class _Server(uvicorn.Server):
    """uvicorn's server that marks the app as draining on the first exit signal."""

    def __init__(self, config: uvicorn.Config, state: ServerState, ready_message: str) -> None:
        super().__init__(config)
        self.app_state = state
        self.ready_message = ready_message

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started:
            LOG.info("%s", self.ready_message)

    def handle_exit(self, sig, frame) -> None:
        if not self.app_state.draining:
            LOG.info("signal %s: draining (new requests get 503; requests in flight are finished)",
                     signal.Signals(sig).name)
        self.app_state.draining = True  # a plain flag: safe to set from a signal handler
        super().handle_exit(sig, frame)


def run_info(recommender: Recommender, config: ServeConfig, fused: FusedRecommender | None = None) -> dict:
    """What ``/v1/info`` reports about the model and the settings."""
    run = recommender.run
    weight = next(run.host.parameters())
    cf_run = None if recommender.cf_model is None else (config.cf_run or TEACHER)
    return {"version": tca4rec.__version__, "model": run.name, "run": str(run.run_dir), "llm": run.config.llm,
            "host": run.config.host, "alpha": run.config.alpha, "dtype": str(weight.dtype).removeprefix("torch."),
            "device": str(weight.device), "dataset": run.dataset.name, "items": run.dataset.num_items,
            "teacher": run.config.cf, "cf_run": cf_run, "beta": recommender.beta,
            "cf_lookahead": recommender.cf_lookahead, "beams": recommender.beams,
            "history_width": recommender.width, "max_batch": config.max_batch, "max_wait_ms": config.max_wait_ms,
            "fusion": None if fused is None else fused.fusion.describe()}


def fused_recommender(recommender: Recommender, cf_run: str | None) -> FusedRecommender:
    """The run's learned fusion beside ``recommender``, on the same loaded run and with the same beams."""
    run = recommender.run
    fused = FusedRecommender(run, load_fusion(run.run_dir, run.signals, cf_run))
    if fused.beams != recommender.beams:
        raise ConfigError(f"--beams {recommender.beams}: the learned fusion of {run.run_dir} was fit on "
                          f"{fused.beams} beams; serve it with --beams {fused.beams}")
    return fused


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def log_config() -> dict:
    """uvicorn's logging set-up, with our ``tca4rec.serve`` logger on its default handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["tca4rec.serve"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def serve(config: ServeConfig) -> None:
    """Load ``config.run`` and serve it until a SIGTERM or SIGINT has been handled (then return)."""
    config.check()
    logging.config.dictConfig(log_config())
    started = time.monotonic()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    LOG.info("loading %s", config.run)
    if config.beta == "auto":
        config.beta = read_tuned_beta(Path(config.run), config.cf_run, config.cf_lookahead)  # fail before the load
    recommender = Recommender(load_llm_run(config.run), beams=config.beams, beta=config.beta, cf_run=config.cf_run,
                              cf_lookahead=config.cf_lookahead)
    fused = fused_recommender(recommender, config.cf_run) if config.fusion else None
    sock = bind(config.host, config.port)
    try:  # warm-up: the first request is not the slow one, and a model that cannot decode never takes traffic
        recommender.decode([[1]], k=1, beta=recommender.beta)
        if fused is not None:
            fused.decode([[1]], k=1)
    except Exception as e:
        sock.close()
        raise RunError(f"{config.run}: the model failed to decode a one-item history ({one_line(e)})") from e
    info = run_info(recommender, config, fused)
    batcher = MicroBatcher(decode_modes(recommender, fused), max_batch=config.max_batch,
                           max_wait_s=config.max_wait_ms / 1000)
    app = create_app(recommender, batcher, info, Limits(max_history=config.max_history, max_body=config.max_body),
                     fused=fused)
    url = url_of(sock)
    ready = (f"ready at {url} (model {info['model']}, {info['items']} items, {time.monotonic() - started:.0f} s "
             f"to start; API docs at {url}/docs)")
    server = _Server(uvicorn.Config(app, log_config=log_config(), access_log=config.access_log,
                                    timeout_graceful_shutdown=None), app.state.server, ready)
    # uvicorn re-raises the signal it handled once it has shut down; ignored, the process exits with status 0.
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
    LOG.info("stopped after %d requests", app.state.server.requests)
