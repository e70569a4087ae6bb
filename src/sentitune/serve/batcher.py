"""The batcher: one bounded queue of texts from every client, one worker thread that classifies up to
`max_batch` of them in one call, and the limits that bound it all."""


from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any

from sentitune.config import ConfigError
from sentitune.errors import SentituneError
from sentitune.inference import Prediction

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
