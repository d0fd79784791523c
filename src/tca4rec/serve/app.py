"""The HTTP API (FastAPI): ``POST /v1/recommend``, ``GET /v1/info``, ``GET /healthz``; docs at ``/docs``.

Every error is a JSON object ``{"error": one line, "field": ..., "value": ...}``: 400 for a
body that is not JSON, 413 for one larger than ``max_body`` bytes, 422 for a value the
model cannot take (an unknown title or item id, an empty or over-long history, one whose
prompt does not fit the model's context, k outside 1..beams, a beta that is not a JSON
number in [0, 1e7] or that needs a CF model the server lacks), 500 with a one-line reason
when the model fails (out of memory, say; the traceback goes to the server's log, never
into a response), 503 once the server is draining after SIGTERM. None of them stops the
server: each request is independent, and the model runs on the batcher's worker thread.
An echoed value JSON cannot carry (NaN, Infinity, a lone surrogate in a title) is
sent as text, so a bad value is always its 422, never a 500 from writing the answer.

``"fusion": true`` ranks by the run's learned fusion (``tca4rec.fuse``; the default of a server
started with ``--fusion``), ``false`` by plain or CF-guided decoding; anything but a JSON
boolean or null, asking a server without a fusion for it, or a beta above 0 with it, is a 422.
"""

from __future__ import annotations

import asyncio
import json
import math
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from tca4rec.llm.recommend import InputError, Recommender
from tca4rec.serve.batcher import DecodeFn, MicroBatcher, one_line

VALUE_CHARS = 200  # an echoed value (a raw body, a long title) is cut to this many characters
FUSION = "fusion"  # the batcher's mode of a request ranked by the learned fusion (other requests: their beta)


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"history": ["Uno Card Game", 17], "k": 5, "beta": None}]})

    history: list[StrictStr | StrictInt] = Field(
        description="items the user interacted with, oldest first: catalog titles (exact) or item ids")
    k: StrictInt = Field(10, description="number of items to return, 1..beams")
    beta: float | None = Field(None, strict=True, allow_inf_nan=False,  # as strict as k: no "1", no true
                               description="CF weight of CF-guided decoding, 0..1e7 (null: the server's default)")
    fusion: StrictBool | None = Field(None, description="rank by the learned fusion (null: the server's default)")


class Item(BaseModel):
    id: int
    title: str
    score: float = Field(description="sum of the title's token log-probs (+ beta * CF log-probs when guided); "
                                     "with fusion, the ranker's score")


class RecommendResponse(BaseModel):
    items: list[Item]
    k: int
    beta: float
    fusion: bool
    beams: int
    history: list[int] = Field(description="the item ids the model read (the last history_width entries)")
    model: str


@dataclass
class Limits:
    max_history: int = 100  # entries accepted in a request's history (the model reads the last width)
    max_body: int = 64 * 1024  # bytes of a request body


class ServerState:
    """What the handlers share besides the model: drain flag and request counters."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self.requests = 0
        self.errors = 0


def error(status: int, message: str, field: str | None = None, value: object = None) -> JSONResponse:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and len(value) > VALUE_CHARS:
        value = value[:VALUE_CHARS] + "..."
    return JSONResponse({"error": _sendable(message), "field": _sendable(field), "value": _sendable(value)},
                        status_code=status)


def _sendable(value: object) -> object:
    """``value`` as JSON can send it: a non-finite number as text (``nan``, ``inf``), a string with a
    lone surrogate (not encodable as UTF-8) with it escaped (``\\ud800``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list):
        return [_sendable(v) for v in value]
    if isinstance(value, dict):
        return {_sendable(k): _sendable(v) for k, v in value.items()}
    return value


def decode_modes(recommender: Recommender, fused: Recommender | None) -> DecodeFn:
    """The batcher's decode function: mode ``FUSION`` ranks by the learned fusion, a beta by decoding."""
    def decode(histories, k, mode):
        return fused.decode(histories, k) if mode == FUSION else recommender.decode(histories, k, mode)
    return decode


def create_app(recommender: Recommender, batcher: MicroBatcher, info: dict, limits: Limits = Limits(),
               fused: Recommender | None = None) -> FastAPI:
    """The app; its lifespan starts the batcher and, at shutdown, lets it finish what is queued.
    ``fused``: the learned fusion's recommender (``tca4rec.fuse.recommend``), the requests' default."""
    state = ServerState()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        batcher.start()
        yield
        await asyncio.to_thread(batcher.stop)

    app = FastAPI(title="tca4rec", summary="LLM generative recommendation (TCA4Rec): ranked catalog items "
                  "after a history", version=str(info.get("version", "")), lifespan=lifespan)
    app.state.server = state
    app.add_middleware(BodyLimit, max_bytes=limits.max_body)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        if state.draining:
            return JSONResponse({"status": "draining", "in_flight": state.in_flight}, status_code=503)
        return JSONResponse({"status": "ok", "in_flight": state.in_flight})

    @app.get("/v1/info")
    async def v1_info() -> dict:
        return {**info, "max_history": limits.max_history, "max_body_bytes": limits.max_body,
                "stats": {"requests": state.requests, "errors": state.errors, "in_flight": state.in_flight,
                          "waiting": batcher.waiting(), **asdict(batcher.stats)}}

    @app.post("/v1/recommend", response_model=RecommendResponse)
    async def v1_recommend(body: RecommendRequest):
        if state.draining:
            return error(503, "the server is shutting down: send the request to another replica")
        state.requests += 1
        state.in_flight += 1
        try:
            k = recommender.check_k(body.k)
            fusion = fused is not None if body.fusion is None else body.fusion
            if fusion and fused is None:
                raise InputError("fusion true: this server has no learned fusion (start it with --fusion)",
                                 "fusion", body.fusion)
            beta = (fused if fusion else recommender).resolve_beta(body.beta)
            history = recommender.item_ids(body.history, limits.max_history)
            future = batcher.submit(history, k, FUSION if fusion else beta)
            try:
                ranked = await asyncio.wrap_future(future)
            except Exception as e:  # noqa: BLE001 - a model failure is this request's answer, not the server's end
                state.errors += 1
                return error(500, f"decoding failed: {one_line(e)}")
        except InputError as e:
            state.errors += 1
            return error(422, str(e), e.field, e.value)
        finally:
            state.in_flight -= 1
        items = [Item(id=r.item_id, title=r.title, score=r.score) for r in ranked]
        return RecommendResponse(items=items, k=k, beta=beta, fusion=fusion, beams=recommender.beams,
                                 history=history, model=str(info.get("model")))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        state.requests += 1  # a request all the same: errors never outnumber requests
        state.errors += 1
        return validation_error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.detail, dict):
            return error(exc.status_code, **exc.detail)
        if exc.status_code == 400:  # FastAPI could not parse the body beyond a JSON syntax error (nested too deeply)
            cause = f": {one_line(exc.__cause__)}" if exc.__cause__ is not None else ""
            return error(400, f"the body could not be read as JSON{cause}", "body")
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return error(500, f"internal error: {one_line(exc)}")

    return app


def validation_error(exc: RequestValidationError) -> JSONResponse:
    """The first problem of a request FastAPI could not parse, as one line naming the field and the value."""
    first = exc.errors()[0]
    kind, loc, value = first.get("type"), list(first.get("loc", ())), first.get("input")
    if kind == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "not JSON")
        body = exc.body if isinstance(exc.body, str) else None
        return error(400, f"the body is not valid JSON ({reason} at position {loc[-1]})", "body", body)
    path = list(loc[1:])  # without "body"
    if len(path) >= 2 and path[0] == "history" and isinstance(path[1], int):
        field = f"history[{path[1]}]"
        return error(422, f"{field} {value!r} is neither a title (string) nor an item id (integer)", field, value)
    field = ".".join(str(part) for part in path) or "body"
    if field == "body" and isinstance(value, (str, bytes)):
        return error(400, "the body must be a JSON object sent with Content-Type: application/json", "body", value)
    if kind == "missing":
        return error(422, f"{field} is required", field, None)
    if kind == "extra_forbidden":
        return error(422, f"{field} is not a request field (fields: history, k, beta, fusion)", field, value)
    return error(422, f"{field} {value!r}: {first.get('msg', 'invalid')}", field, value)


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413, whether announced (Content-Length) or streamed."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(int(declared), send)
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, detail=self._detail(received, streamed=True))
            return message

        await self.app(scope, limited_receive, send)

    def _detail(self, size: int, streamed: bool = False) -> dict:
        return {"message": f"the body has {'at least ' if streamed else ''}{size} bytes, at most {self.max_bytes} "
                           "are accepted", "field": "body", "value": size}

    async def _too_large(self, size: int, send) -> None:
        detail = self._detail(size)
        payload = json.dumps({"error": detail["message"], "field": "body", "value": size}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})
