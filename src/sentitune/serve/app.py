"""The app (FastAPI) around one Predictor and its Batcher, and the uvicorn server that runs it."""


from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from sentitune import __version__
from sentitune.config import ConfigError
from sentitune.errors import RunError, SentituneError
from sentitune.inference import Predictor
from sentitune.models.registry import base_record
from sentitune.serve.batcher import Batcher, Limits, QueueFull
from sentitune.serve.body import BodyLimit, JSONBodyRoute, error_response
from sentitune.serve.page import PAGE
from sentitune.serve.schemas import (
    ErrorOut,
    HealthOut,
    MetadataOut,
    PredictionOut,
    PredictionsOut,
    PredictRequest,
    record,
)


def _metadata(predictor: Predictor, limits: Limits) -> MetadataOut:
    """What /metadata says of the run served (a transformer reads the text: it has a base model, a max length)."""
    cfg, tokens = predictor.cfg, predictor.kind.reads_tokens
    return MetadataOut(
        run=cfg.name, method=cfg.method.name,
        base_model=str(base_record(cfg.model.spec)["base"]) if tokens else None,
        labels=predictor.labels, max_length=cfg.data.max_length if tokens else None,
        truncation=cfg.data.truncation, windows=cfg.data.windows, needs_target=predictor.needs_target,
        precision=predictor.scorer.precision,  # what a trained classifier computes in; None for the others
        version=__version__, limits=asdict(limits))


def _answer_errors_as_json(app: FastAPI) -> None:
    """Every error a one-line JSON {"error": ...}: HTTP errors, invalid requests (422), and bugs (500)."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = list(e.errors())
        return JSONResponse({"error": _validation_message(errors), "detail": _plain(errors)}, 422)

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}"}, 500)


def _checked(body: PredictRequest, limits: Limits, predictor: Predictor
             ) -> tuple[bool, list[str], list[str] | None]:
    """(one text?, the texts, their targets) of a request within the limits (413) that the run can classify
    (422: a target where none is read, or none where one is needed)."""
    single = body.text is not None
    texts = [body.text] if body.text is not None else list(body.texts or [])
    targets = [body.target] if single and body.target is not None else body.targets
    field_name, run = ("text" if single else "texts"), predictor.cfg.name
    if len(texts) > limits.max_texts:
        raise HTTPException(413, f"texts: {len(texts)} texts, over --max-texts ({limits.max_texts} per request)")
    for i, text in enumerate(texts):
        if len(text) > limits.max_chars:
            where = field_name if single else f"texts[{i}]"
            raise HTTPException(413, f"{where}: {len(text):,} characters, over --max-chars "
                                     f"({limits.max_chars:,} per text)")
    if predictor.needs_target and targets is None:
        raise HTTPException(422, f"{'target' if single else 'targets'}: run {run} classifies the sentiment "
                                 "toward a target: give one per text")
    if not predictor.needs_target and targets is not None:
        raise HTTPException(422, f"{'target' if single else 'targets'}: run {run} classifies whole texts; "
                                 "it was not trained with targets")
    return single, texts, targets


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
    metadata = _metadata(predictor, limits)

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
    app.router.route_class = JSONBodyRoute  # before the routes below: a body that is not JSON is a 422
    app.state.batcher = batcher
    app.state.predictor = predictor
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    _answer_errors_as_json(app)
    errors: dict[int | str, dict[str, Any]] = {
        413: {"model": ErrorOut, "description": "body, texts per request or characters per text over a limit"},
        422: {"model": ErrorOut, "description": "malformed JSON, a wrong or missing field, or a text the run "
                                                "cannot classify (the message names which)"},
        503: {"model": ErrorOut, "description": "the queue is full: retry after Retry-After seconds"}}

    @app.post("/predict", response_model=PredictionOut | PredictionsOut, response_model_exclude_none=True,
              responses=errors, summary="classify one review or several")
    async def predict(body: PredictRequest) -> PredictionOut | PredictionsOut:
        single, texts, targets = _checked(body, limits, predictor)
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
