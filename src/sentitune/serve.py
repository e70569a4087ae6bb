"""`sentitune serve`: one saved run behind an HTTP API, with dynamic batching across clients.

Why a batcher: a transformer classifies 32 reviews in one forward pass in much less than 32 times one
review's time, but HTTP clients usually send one review each. Requests wait (at most `max_wait_ms`) in
one bounded queue; a single worker thread takes up to `max_batch` texts, makes one `Predictor.predict`
call for all of them and hands each request its own rows. torch runs in that thread, never on the event
loop, so the server keeps answering (and refusing with 503 when the queue is full) while it computes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sentitune import __version__
from sentitune.config import ConfigError
from sentitune.errors import RunError, SentituneError
from sentitune.inference import Prediction, Predictor
from sentitune.models.registry import base_record

# --------------------------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limits:
    """What one server accepts. Every bound turns an overload into a quick 4xx/503, never a growing queue."""

    max_batch: int = 32  # texts per Predictor.predict call
    max_wait_ms: float = 10.0  # how long the first text of a batch waits for others to join it
    queue_size: int = 256  # texts waiting, all requests together; a request that does not fit gets 503
    max_texts: int = 64  # texts per request
    max_chars: int = 20_000  # characters per text (the longest IMDb review has about 14,000)
    max_body_bytes: int = 2_000_000  # the request body, before JSON is parsed

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name == "max_wait_ms" and value < 0:
                raise ConfigError(f"serve: --max-wait-ms must be 0 or more, got {value:g}")
            if name != "max_wait_ms" and value <= 0:
                raise ConfigError(f"serve: {_flag(name)} must be positive, got {value}")
        if self.max_texts > self.queue_size:
            raise ConfigError(f"serve: --max-texts ({self.max_texts}) is larger than --queue-size "
                              f"({self.queue_size}): a request that large could never be queued")


def _flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


# -------------------------------------------------------------------------------------------- batcher


class QueueFull(Exception):
    """The queue has no room for a request's texts (the client should retry later: 503)."""


@dataclass
class _Job:
    """One request's texts; its future gets exactly its predictions, in order."""

    texts: list[str]
    targets: list[str] | None
    future: Future[list[Prediction]] = field(default_factory=Future)


@dataclass
class BatchStats:
    """Counters since start: they show whether requests were really batched together."""

    requests: int = 0  # answered with predictions
    texts: int = 0  # classified
    batches: int = 0  # Predictor.predict calls that succeeded
    largest_batch: int = 0
    rejected: int = 0  # requests refused with a full queue
    failed: int = 0  # requests answered with an error


class Batcher:
    """A bounded queue of requests and one worker thread that classifies them in shared batches.

    Requests are never split: a batch takes whole requests while their texts fit in `max_batch` (a
    request larger than that runs alone; Predictor.predict cuts it into batches of `max_batch`). A batch
    that raises a sentitune error (DataError: an empty review...) is retried request by request, so one
    bad request fails alone.
    """

    def __init__(self, predict: Callable[[list[str], list[str] | None], list[Prediction]], limits: Limits) -> None:
        self._predict = predict
        self.limits = limits
        self._jobs: deque[_Job] = deque()
        self._queued = 0  # texts in _jobs
        self._in_flight = 0  # texts being classified
        self._cond = threading.Condition()
        self._paused = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._stats = BatchStats()

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="sentitune-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the batch in progress; requests still queued fail (the server is shutting down)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            while self._jobs:
                job = self._jobs.popleft()
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(QueueFull("the server is shutting down"))
            self._queued = 0

    def pause(self) -> None:
        """Hold the worker before its next batch (requests keep queueing): deterministic overload tests."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, texts: list[str], targets: list[str] | None = None) -> Future[list[Prediction]]:
        """Queue one request; QueueFull when its texts do not fit (nothing is queued then)."""
        job = _Job(list(texts), None if targets is None else list(targets))
        with self._cond:
            if self._stopping or not self.alive:
                self._stats.rejected += 1
                raise QueueFull("the server is not running")
            if self._queued + len(job.texts) > self.limits.queue_size:
                self._stats.rejected += 1
                raise QueueFull(f"the queue is full ({self._queued} of --queue-size {self.limits.queue_size} "
                                f"texts waiting, this request has {len(job.texts)})")
            self._jobs.append(job)
            self._queued += len(job.texts)
            self._cond.notify_all()
        return job.future

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            s = self._stats
            return {**asdict(s), "mean_batch": s.texts / s.batches if s.batches else 0.0,
                    "queued_texts": self._queued, "queued_requests": len(self._jobs),
                    "in_flight": self._in_flight, "paused": self._paused}

    # -- the worker thread

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._in_flight = 0

    def _take(self) -> list[_Job] | None:
        """Whole requests, up to max_batch texts: wait for a first one, then at most max_wait_ms for more."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or (bool(self._jobs) and not self._paused))
            if self._stopping:
                return None
            batch = [self._jobs.popleft()]
            deadline = time.monotonic() + self.limits.max_wait_ms / 1000
            size = len(batch[0].texts)
            while size < self.limits.max_batch and not self._stopping:
                if self._jobs:
                    nxt = self._jobs[0]
                    if size + len(nxt.texts) > self.limits.max_batch or (nxt.targets is None) != (
                            batch[0].targets is None):
                        break  # it waits for the next batch, first in line
                    batch.append(self._jobs.popleft())
                    size += len(nxt.texts)
                elif (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                else:
                    break
            self._queued -= size
            # A request whose waiting task was cancelled (its future with it) costs no compute.
            batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
            self._in_flight = sum(len(job.texts) for job in batch)
            return batch

    def _run(self, batch: list[_Job]) -> None:
        if not batch:
            return
        texts = [t for job in batch for t in job.texts]
        targets = None if batch[0].targets is None else [t for job in batch for t in job.targets or []]
        try:
            predictions = self._predict(texts, targets)
        except SentituneError as e:  # the input's fault (DataError: an empty review, a missing target)
            if len(batch) > 1:
                for job in batch:  # find the request(s) at fault: each alone, with its own review numbers
                    self._run([job])
                return
            self._fail(batch, e)
            return
        except Exception as e:  # a bug or out of memory: every request of the batch is answered
            self._fail(batch, e)
            return
        with self._cond:
            self._stats.batches += 1
            self._stats.texts += len(texts)
            self._stats.requests += len(batch)
            self._stats.largest_batch = max(self._stats.largest_batch, len(texts))
        start = 0
        for job in batch:
            job.future.set_result(predictions[start:start + len(job.texts)])
            start += len(job.texts)

    def _fail(self, batch: list[_Job], error: Exception) -> None:
        with self._cond:
            self._stats.failed += len(batch)
        for job in batch:
            job.future.set_exception(error)


# ------------------------------------------------------------------------------------ request / response


class PredictRequest(BaseModel):
    """One review (`text`) or several (`texts`); a target-dependent run also needs `target` / `targets`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"text": "A wonderful film."},
        {"texts": ["A wonderful film.", "Two hours I will never get back."]},
        {"text": "Great food, rude staff.", "target": "staff"}]})

    text: StrictStr | None = Field(None, min_length=1, description="one review (answered with one prediction)")
    target: StrictStr | None = Field(None, min_length=1, description="with text: what the sentiment is toward")
    texts: list[StrictStr] | None = Field(None, min_length=1,
                                          description="several reviews (answered with {predictions: [...]})")
    targets: list[StrictStr] | None = Field(None, min_length=1, description="with texts: one target per text")

    @field_validator("text", "target")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("blank (only whitespace)")
        return value

    @field_validator("texts", "targets")
    @classmethod
    def _none_blank(cls, values: list[str] | None) -> list[str] | None:
        for i, value in enumerate(values or []):
            if not value.strip():
                raise ValueError(f"item {i} is empty or only whitespace")
        return values

    @model_validator(mode="after")
    def _one_form(self) -> PredictRequest:
        if self.text is None and self.texts is None:
            raise ValueError("give text (one review) or texts (a list of reviews)")
        if self.text is not None and self.texts is not None:
            raise ValueError("give text or texts, not both")
        if self.text is not None and self.targets is not None:
            raise ValueError("targets goes with texts; with text, give target")
        if self.texts is not None and self.target is not None:
            raise ValueError("target goes with text; with texts, give targets (one per text)")
        if self.texts is not None and self.targets is not None and len(self.targets) != len(self.texts):
            raise ValueError(f"targets has {len(self.targets)} items for {len(self.texts)} texts")
        return self


class PredictionOut(BaseModel):
    """The fields of `sentitune predict --json` (less the text), at full float precision."""

    label: str = Field(description="the most probable class")
    probability: float = Field(description="the probability of label")
    probs: dict[str, float] = Field(description="every class's probability, in the run's label order")
    prob_positive: float | None = Field(None, description="two classes: the second (positive) one's probability")
    target: str | None = Field(None, description="target-dependent runs: the target classified toward")


class PredictionsOut(BaseModel):
    predictions: list[PredictionOut] = Field(description="one per text, in order")


class ErrorOut(BaseModel):
    error: str = Field(description="one line naming the problem (the field, the limit)")
    detail: Any = Field(None, description="validation errors as FastAPI lists them")


class HealthOut(BaseModel):
    status: str = Field(description="ok while the batch worker runs")
    requests: int = Field(description="requests answered with predictions")
    texts: int = Field(description="texts classified")
    batches: int = Field(description="Predictor.predict calls")
    mean_batch: float = Field(description="texts per batch: above 1 when requests were batched together")
    largest_batch: int
    rejected: int = Field(description="requests refused with 503 (queue full)")
    failed: int = Field(description="requests answered with an error from the model")
    queued_texts: int
    queued_requests: int
    in_flight: int
    paused: bool


class MetadataOut(BaseModel):
    run: str
    method: str
    base_model: str | None = Field(description="the backbone: its hub id (a packaged model's too), or its folder; "
                                               "null for a tfidf run")
    labels: list[str]
    max_length: int | None = Field(description="tokens per text, special tokens included (longer: truncated)")
    truncation: str
    windows: int = Field(1, description="a text longer than max_length is read as up to this many windows, whose "
                                        "logits are pooled (data.windows)")
    needs_target: bool = Field(description="requests must give target / targets")
    precision: str | None = Field(description="what inference computes in (fp32 unless the run chose otherwise)")
    version: str
    limits: dict[str, int | float] = Field(description="what this server accepts (sentitune serve --help)")


def record(prediction: Prediction) -> PredictionOut:
    """What the API returns for one prediction."""
    binary = len(prediction.probs) == 2
    return PredictionOut(label=prediction.label, probability=prediction.probability, probs=prediction.probs,
                         prob_positive=prediction.prob_positive if binary else None, target=prediction.target)


# ------------------------------------------------------------------------------------------- the app


class BodyLimit:
    """413 for a body over `limit` bytes, told by Content-Length or counted as a chunked body arrives."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    def _error(self) -> HTTPException:
        return HTTPException(413, f"request body larger than --max-body-bytes ({self.limit:,} bytes)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _error_response(self._error())(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise self._error()  # FastAPI re-raises an HTTPException from reading the body: ours answers it
            return message

        await self.app(scope, counted, send)


# ------------------------------------------------------------------------------------- the JSON body

MAX_JSON_DEPTH = 100  # arrays and objects inside each other in a request body (a request needs 2)
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)  # a string, or a bracket
_THREAD_BYTES = 64 * 1024  # a body larger than this is parsed off the event loop


def _too_deep_at(text: str, limit: int) -> int | None:
    """The character where arrays/objects first nest deeper than `limit` (brackets in strings are text)."""
    if text.count("[") + text.count("{") <= limit:
        return None  # cannot be: the cheap test every ordinary request passes
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        at = match.start()
        if text[at] in "[{":
            depth += 1
            if depth > limit:
                return at
        elif text[at] != '"':
            depth -= 1
    return None


def parse_json_body(body: bytes) -> Any:
    """json.loads as Starlette calls it, with every failure a JSONDecodeError naming the character.

    Why: json.loads raises UnicodeDecodeError for bytes that are not UTF-8 and RecursionError for deep
    nesting; FastAPI answers both with a bare 400 "There was an error parsing the body". A JSONDecodeError
    becomes its 422 json_invalid error instead, i.e. `malformed JSON at character N: ...` (docs/SERVING.md).
    Nesting is bounded at MAX_JSON_DEPTH, well inside what json's recursive parser survives.
    """
    encoding = json.detect_encoding(body)  # UTF-8 (a BOM allowed), or UTF-16/32 told by their zero bytes
    try:
        text = body.decode(encoding, "surrogatepass")
    except UnicodeDecodeError as e:
        at = len(body[:e.start].decode(encoding, "surrogatepass"))  # characters before the bad byte
        name = "UTF-8" if encoding.startswith("utf-8") else encoding.upper()
        raise json.JSONDecodeError(f"not {name} text (byte 0x{body[e.start]:02x})",
                                   body.decode(encoding, "replace"), at) from None
    too_deep = f"nested too deeply (more than {MAX_JSON_DEPTH} levels)"
    if (at := _too_deep_at(text, MAX_JSON_DEPTH)) is not None:
        raise json.JSONDecodeError(too_deep, text, at)
    try:
        return json.loads(text)
    except RecursionError:  # not reached with MAX_JSON_DEPTH that low, unless the stack is nearly full already
        raise json.JSONDecodeError(too_deep, text, 0) from None


class _JSONBodyRequest(Request):
    """A request whose JSON body is parsed by parse_json_body (a large one in a thread, so that a 2 MB body
    of brackets does not hold up the other clients)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = (await asyncio.to_thread(parse_json_body, body) if len(body) > _THREAD_BYTES
                          else parse_json_body(body))
        return self._json


class _JSONBodyRoute(APIRoute):
    """FastAPI's route with _JSONBodyRequest: how FastAPI documents replacing the request class."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_json_body(request: Request) -> Response:
            return await handler(_JSONBodyRequest(request.scope, request.receive))

        return with_json_body


def _error_response(e: HTTPException) -> JSONResponse:
    return JSONResponse({"error": e.detail}, e.status_code, headers=dict(e.headers or {}))


def _validation_message(errors: list[dict[str, Any]]) -> str:
    """FastAPI's validation errors as one line: `texts[2]: Input should be a valid string; ...`."""
    parts = []
    for error in errors:
        loc = [x for x in error.get("loc", ()) if x != "body"]
        if error.get("type") == "json_invalid":
            parts.append(f"malformed JSON at character {loc[0] if loc else 0}: "
                         f"{error.get('ctx', {}).get('error', error.get('msg'))}")
            continue
        where = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc).lstrip(".") or "body"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if where == "body" and error.get("type") == "missing":
            message = "a JSON object with text or texts is required"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def create_app(run_dir: Path, precision: str | None = None, limits: Limits | None = None,
               predictor: Predictor | None = None) -> FastAPI:
    """The API for one saved run, loaded once here (so a bad run fails before the server listens).

    `predictor`: an already loaded one for `run_dir` (tests compare with the same object). The batch
    worker starts and stops with the app (its lifespan); `app.state.batcher` is it.
    """
    limits = limits or Limits()
    predictor = predictor or Predictor(Path(run_dir), precision)
    batcher = Batcher(lambda texts, targets: predictor.predict(texts, limits.max_batch, targets), limits)
    cfg = predictor.cfg
    tokens = predictor.kind.reads_tokens  # a transformer reads the text: it has a base model and a max length
    metadata = MetadataOut(
        run=cfg.name, method=cfg.method.name,
        base_model=str(base_record(cfg.model.spec)["base"]) if tokens else None,
        labels=predictor.labels, max_length=cfg.data.max_length if tokens else None,
        truncation=cfg.data.truncation, windows=cfg.data.windows, needs_target=predictor.needs_target,
        precision=predictor.scorer.precision,  # what a trained classifier computes in; None for the others
        version=__version__, limits=asdict(limits))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.stop)  # the batch in progress finishes off the event loop

    app = FastAPI(title="sentitune", version=__version__, lifespan=lifespan,
                  description=f"Sentiment predictions of the saved run `{cfg.name}` ({cfg.method.name}, "
                              f"{metadata.base_model}), batched across clients.")
    app.router.route_class = _JSONBodyRoute  # before the routes below: a body that is not JSON is a 422
    app.state.batcher = batcher
    app.state.predictor = predictor
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return _error_response(e)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = list(e.errors())
        return JSONResponse({"error": _validation_message(errors), "detail": _plain(errors)}, 422)

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}"}, 500)

    errors: dict[int | str, dict[str, Any]] = {
        413: {"model": ErrorOut, "description": "body, texts per request or characters per text over a limit"},
        422: {"model": ErrorOut, "description": "malformed JSON, a wrong or missing field, or a text the run "
                                                "cannot classify (the message names which)"},
        503: {"model": ErrorOut, "description": "the queue is full: retry after Retry-After seconds"}}

    @app.post("/predict", response_model=PredictionOut | PredictionsOut, response_model_exclude_none=True,
              responses=errors, summary="classify one review or several")
    async def predict(body: PredictRequest) -> PredictionOut | PredictionsOut:
        single = body.text is not None
        texts = [body.text] if body.text is not None else list(body.texts or [])
        targets = [body.target] if single and body.target is not None else body.targets
        field_name = "text" if single else "texts"
        if len(texts) > limits.max_texts:
            raise HTTPException(413, f"texts: {len(texts)} texts, over --max-texts ({limits.max_texts} per request)")
        for i, text in enumerate(texts):
            if len(text) > limits.max_chars:
                where = field_name if single else f"texts[{i}]"
                raise HTTPException(413, f"{where}: {len(text):,} characters, over --max-chars "
                                         f"({limits.max_chars:,} per text)")
        if predictor.needs_target and targets is None:
            raise HTTPException(422, f"{'target' if single else 'targets'}: run {cfg.name} classifies the sentiment "
                                     "toward a target: give one per text")
        if not predictor.needs_target and targets is not None:
            raise HTTPException(422, f"{'target' if single else 'targets'}: run {cfg.name} classifies whole texts; "
                                     "it was not trained with targets")
        try:
            future = batcher.submit(texts, targets)
        except QueueFull as e:
            raise HTTPException(503, f"busy: {e}; retry shortly", headers={"Retry-After": "1"}) from None
        try:
            predictions = await asyncio.wrap_future(future)
        except SentituneError as e:
            raise HTTPException(422, str(e)) from None
        except QueueFull as e:
            raise HTTPException(503, str(e), headers={"Retry-After": "1"}) from None
        out = [record(p) for p in predictions]
        return out[0] if single else PredictionsOut(predictions=out)

    @app.get("/health", response_model=HealthOut, summary="liveness and batching counters",
             responses={503: {"model": HealthOut, "description": "the batch worker is not running"}})
    async def health() -> JSONResponse:
        stats = {"status": "ok" if batcher.alive else "stopped", **batcher.snapshot()}
        return JSONResponse(HealthOut(**stats).model_dump(), 200 if batcher.alive else 503)

    @app.get("/metadata", response_model=MetadataOut, summary="the run served and the server's limits")
    async def meta() -> MetadataOut:
        return metadata

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    return app


def _plain(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors that JSON can carry (pydantic puts the exception object itself in ctx), without the
    input they quote: that can be a whole review, sent back for nothing."""
    return [{k: (v if k != "ctx" else {c: str(x) for c, x in v.items()}) for k, v in e.items()
             if k not in ("url", "input")} for e in errors]


# ------------------------------------------------------------------------------------------ serving


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before uvicorn starts: a busy port is a one-line error (uvicorn would log
    it and exit 1), and port 0 picks a free one whose number the caller can read."""
    if not 0 <= port <= 65535:  # getaddrinfo would wrap 70000 around to another port
        raise ConfigError(f"--port {port}: not a port number (0 to 65535; 0 picks a free one)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise ConfigError(f"--host {host}: {e.strerror or e}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)  # uvicorn's backlog: a client that connects before uvicorn runs waits, not refused
    except OSError as e:
        sock.close()
        raise ConfigError(f"{host}:{port}: cannot listen there ({e.strerror or e}); choose another --port") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(run_dir: Path, host: str = "127.0.0.1", port: int = 8000, precision: str | None = None,
          limits: Limits | None = None, log_level: str = "info",
          ready: Callable[[str], None] | None = None) -> None:
    """Serve the run until Ctrl-C (uvicorn, one process: the model is loaded once and shared by every
    client through the batcher). `ready` is called with the base URL once the model is loaded
    and the port listens."""
    import uvicorn

    sock = bind(host, port)  # a busy port fails before the model loads
    try:
        app = create_app(run_dir, precision, limits)
        if ready is not None:
            ready(url_of(sock))
        uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])
    finally:
        sock.close()


@contextlib.contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> Iterator[str]:
    """`app` served by uvicorn in a background thread of this process, for tests and benchmarks: yields the
    base URL (port 0: a free port), stops the server (and the batcher) on exit."""
    import uvicorn

    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="sentitune-server", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RunError(f"the server for {url_of(sock)} stopped while starting (see its log)")
            time.sleep(0.01)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


# -------------------------------------------------------------------------------------------- the page

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sentitune</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  textarea, input { width: 100%; box-sizing: border-box; font: inherit; padding: .4rem; }
  button { font: inherit; padding: .4rem 1.2rem; margin: .6rem 0; }
  #label { font-size: 1.4rem; }
  table { border-collapse: collapse; }
  td { padding: .15rem .6rem .15rem 0; }
  .bar { display: inline-block; height: .8rem; background: #4a7bd0; }
  #error { color: #b00020; }
  small { color: #666; }
</style>
</head>
<body>
<h1>sentitune <small id="run"></small></h1>
<form id="form">
  <label for="text">A review</label>
  <textarea id="text" rows="8" placeholder="Type or paste a review..."></textarea>
  <div id="target-row" hidden><label for="target">Target (the sentiment toward what?)</label>
    <input id="target"></div>
  <button id="classify" type="submit">Classify</button>
</form>
<div id="result" hidden>
  <p>Label: <strong id="label"></strong> (<span id="probability"></span>)</p>
  <table id="probs"></table>
</div>
<p id="error" role="alert"></p>
<p><small>API: <a href="docs">docs</a>, <a href="openapi.json">openapi.json</a>,
  <a href="metadata">metadata</a>, <a href="health">health</a></small></p>
<script>
const $ = (id) => document.getElementById(id);
fetch("metadata").then((r) => r.json()).then((m) => {
  $("run").textContent = m.run + " (" + m.method + ", " + (m.base_model || "tfidf") + ")";
  $("target-row").hidden = !m.needs_target;
});
$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("error").textContent = "";
  $("result").hidden = true;
  $("label").textContent = "";
  $("classify").disabled = true;
  const body = { text: $("text").value };
  if (!$("target-row").hidden) body.target = $("target").value;
  try {
    const response = await fetch("predict", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const data = await response.json();
    if (!response.ok) { $("error").textContent = data.error || response.statusText; return; }
    $("probability").textContent = (100 * data.probability).toFixed(1) + "%";
    const table = $("probs");
    table.replaceChildren();
    for (const [name, p] of Object.entries(data.probs)) {
      const row = table.insertRow();
      row.insertCell().textContent = name;
      row.insertCell().textContent = p.toFixed(4);
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = (10 * p).toFixed(2) + "rem";
      row.insertCell().append(bar);
    }
    $("label").textContent = data.label;
    $("result").hidden = false;
  } catch (error) {
    $("error").textContent = String(error);
  } finally {
    $("classify").disabled = false;
  }
});
</script>
</body>
</html>
"""
