"""`sentitune serve`: one saved run behind an HTTP API, with dynamic batching across clients.

Why a batcher: a transformer classifies 32 reviews in one forward pass in much less than 32 times one
review's time, but HTTP clients usually send one review each. Requests wait (at most `max_wait_ms`) in
one bounded queue; a single worker thread takes up to `max_batch` texts, makes one `Predictor.predict`
call for all of them and hands each request its own rows. torch runs in that thread, never on the event
loop, so the server keeps answering (and refusing with 503 when the queue is full) while it computes.

The package: `batcher.py` (limits, the queue and its worker), `schemas.py` (request and answer models),
`body.py` (body size and JSON parsing), `app.py` (create_app, serve, running), `page.py` (the page at `/`).
"""

from sentitune.serve.app import bind, create_app, running, serve, url_of
from sentitune.serve.batcher import Batcher, BatchStats, Limits, QueueFull
from sentitune.serve.body import MAX_JSON_DEPTH, parse_json_body

__all__ = ["MAX_JSON_DEPTH", "BatchStats", "Batcher", "Limits", "QueueFull", "bind", "create_app", "parse_json_body",
           "running", "serve", "url_of"]
