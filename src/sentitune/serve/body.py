"""What reaches the app as a body: its size bounded while it streams in, its JSON parsed with every failure a
422 naming the character (not UTF-8, nested too deeply), never a bare 400."""


from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
            await error_response(self._error())(scope, receive, send)
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


class JSONBodyRequest(Request):
    """A request whose JSON body is parsed by parse_json_body (a large one in a thread, so that a 2 MB body
    of brackets does not hold up the other clients)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = (await asyncio.to_thread(parse_json_body, body) if len(body) > _THREAD_BYTES
                          else parse_json_body(body))
        return self._json


class JSONBodyRoute(APIRoute):
    """FastAPI's route with JSONBodyRequest: how FastAPI documents replacing the request class."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_json_body(request: Request) -> Response:
            return await handler(JSONBodyRequest(request.scope, request.receive))

        return with_json_body


def error_response(e: HTTPException) -> JSONResponse:
    return JSONResponse({"error": e.detail}, e.status_code, headers=dict(e.headers or {}))
