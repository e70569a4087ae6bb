"""Claims: which worker process works on what, in one database that many workers share.

Why a table and not lock files: an INSERT on a primary key and a compare-and-swap UPDATE are atomic on SQLite
(one machine) and PostgreSQL (several machines) alike, and SQLAlchemy, installed with Optuna, speaks both. A
claim carries a heartbeat that a thread refreshes while the work runs; a claim whose heartbeat is older than
the grace period (its worker died or hangs), or whose worker was a process of this machine that is gone, is
taken over by the next worker that asks. Every time is the database's clock, so workers on machines whose
clocks differ still agree on what is stale.

    claims = Claims("sqlite:///out/claims.db", grace=120)
    held = claims.try_hold("bench:b:row1")      # None: another live worker holds it
    with held:                                 # heartbeat thread while inside
        ...; held.done()                       # or held.failed("one line"); leaving without either releases it
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

import sqlalchemy as sa

from sentitune.errors import SentituneError
from sentitune.extras import require

GRACE_SECONDS = 120  # a claim (or an Optuna trial) without a heartbeat for this long is taken over
TABLE = "sentitune_claims"
_META = sa.MetaData()
_CLAIMS = sa.Table(
    TABLE, _META,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # running | done | failed
    sa.Column("worker", sa.String(255), nullable=False),
    sa.Column("claimed", sa.Float, nullable=False),  # seconds since the epoch, the database's clock
    sa.Column("heartbeat", sa.Float, nullable=False),
    sa.Column("message", sa.Text, nullable=False, default=""),
)


class ClaimsError(SentituneError):
    """The claims database cannot be opened or written."""


def heartbeat_interval(grace: float) -> int:
    """Seconds between heartbeats: a quarter of the grace period, so three may be lost before a takeover."""
    return max(1, int(grace // 4))


def worker_id() -> str:
    """host:pid:token. The host and pid let a worker on the same machine see at once that a holder is gone;
    the token keeps two processes that reuse a pid apart."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def local_and_gone(worker: str) -> bool:
    """True when `worker` was a process of this machine that no longer runs (killed: no need to wait for the
    grace period). A worker of another machine, or an unreadable id, is never judged here."""
    host, _, rest = worker.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it runs, as another user
        return False
    return False


@dataclass(frozen=True)
class Claim:
    key: str
    state: str
    worker: str
    claimed: float
    heartbeat: float
    message: str


class Beat:
    """A daemon thread that calls each function every `interval` seconds until stopped (a context manager).
    A failed call (the database briefly away) is tried again at the next beat."""

    def __init__(self, interval: float, *calls: Callable[[], object]) -> None:
        self.interval, self.calls = interval, calls
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sentitune-heartbeat")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for call in self.calls:
                with suppress(Exception):
                    call()

    def __enter__(self) -> Beat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Claims:
    """The claims table in one database URL (created when missing)."""

    def __init__(self, url: str, grace: float = GRACE_SECONDS) -> None:
        self.url, self.grace, self.worker = url, float(grace), worker_id()
        if url.startswith("postgresql"):
            require("postgres", "a PostgreSQL --storage")
        try:
            self.engine = sa.create_engine(url, **({"connect_args": {"timeout": 60}} if url.startswith("sqlite")
                                                    else {"pool_pre_ping": True}))
            for attempt in range(3):  # two workers creating the table at once: one loses, then sees it
                try:
                    _META.create_all(self.engine)
                    break
                except sa.exc.DBAPIError:
                    if attempt == 2:
                        raise
                    time.sleep(0.2)
            self.started = self.now()
        except sa.exc.SQLAlchemyError as e:
            raise ClaimsError(f"claims database {safe_url(url)}: cannot open "
                              f"({str(e.orig if isinstance(e, sa.exc.DBAPIError) else e).strip().splitlines()[0]})"
                              ) from None

    # ----------------------------------------------------------------------------------- reading

    def now(self, conn: sa.Connection | None = None) -> float:
        """The database's clock, in seconds since the epoch (SQLite gives naive UTC, PostgreSQL an aware time)."""
        if conn is None:
            with self.engine.connect() as c:
                return self.now(c)
        # SQLite's CURRENT_TIMESTAMP has whole seconds: a row finished and the next worker's start would tie
        # within one second, so "finished in this round" could not be told apart; ask it for milliseconds.
        clock = (sa.func.strftime("%Y-%m-%d %H:%M:%f", "now") if self.engine.dialect.name == "sqlite"
                 else sa.func.now())
        value = conn.execute(sa.select(clock)).scalar()
        if isinstance(value, str):  # SQLite's strftime: text, 'YYYY-MM-DD HH:MM:SS.SSS' in UTC
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()

    def get(self, key: str) -> Claim | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(_CLAIMS).where(_CLAIMS.c.key == key)).first()
        return None if row is None else Claim(*row)

    def all(self, prefix: str = "") -> list[Claim]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(_CLAIMS).where(_CLAIMS.c.key.startswith(prefix, autoescape=True))).all()
        return [Claim(*r) for r in rows]

    def this_round(self, claim: Claim, since: float | None = None) -> bool:
        """Whether `claim` last changed after `since` (default: after this worker started), i.e. in this round;
        strictly after, so a claim finished just before this worker opened the database is an earlier round's."""
        return claim.heartbeat > (self.started if since is None else since)

    def takeable(self, claim: Claim, now: float, since: float | None = None) -> bool:
        """Ours already; a running claim whose worker is stale (no heartbeat for the grace period) or gone; a
        finished one, unless it failed in another worker after `since` (that failure stands for this round)."""
        if claim.worker == self.worker:
            return True
        if claim.state == "running":
            return now - claim.heartbeat > self.grace or local_and_gone(claim.worker)
        return not (claim.state == "failed" and since is not None and self.this_round(claim, since))

    # ----------------------------------------------------------------------------------- writing

    def try_claim(self, key: str, since: float | None = None) -> tuple[bool, Claim | None]:
        """(True, None) when this worker now holds `key` (new, or taken over); (False, holder) otherwise."""
        try:
            with self.engine.begin() as c:
                now = self.now(c)
                c.execute(_CLAIMS.insert().values(key=key, state="running", worker=self.worker, claimed=now,
                                                  heartbeat=now, message=""))
            return True, None
        except sa.exc.IntegrityError:
            pass
        with self.engine.begin() as c:
            now = self.now(c)
            row = c.execute(sa.select(_CLAIMS).where(_CLAIMS.c.key == key)).first()
            if row is None:  # released in between: try again from the start
                return self.try_claim(key, since)
            claim = Claim(*row)
            if not self.takeable(claim, now, since):
                return False, claim
            # Compare and swap: only if nobody changed the row since we read it.
            done = c.execute(_CLAIMS.update().where(
                _CLAIMS.c.key == key, _CLAIMS.c.worker == claim.worker, _CLAIMS.c.state == claim.state,
                _CLAIMS.c.heartbeat == claim.heartbeat).values(
                state="running", worker=self.worker, claimed=now, heartbeat=now, message=""))
            return (True, None) if done.rowcount == 1 else (False, claim)

    def beat(self, key: str) -> bool:
        """Refresh this worker's heartbeat on `key`; False when the claim is no longer ours (taken over)."""
        with self.engine.begin() as c:
            now = self.now(c)
            return c.execute(_CLAIMS.update().where(_CLAIMS.c.key == key, _CLAIMS.c.worker == self.worker,
                                                    _CLAIMS.c.state == "running").values(heartbeat=now)).rowcount == 1

    def finish(self, key: str, state: str, message: str = "") -> None:
        with self.engine.begin() as c:
            now = self.now(c)
            c.execute(_CLAIMS.update().where(_CLAIMS.c.key == key, _CLAIMS.c.worker == self.worker).values(
                state=state, heartbeat=now, message=message))

    def release(self, key: str) -> None:
        """Give the key up (interrupted, or a lock's end): the next worker takes it at once."""
        with self.engine.begin() as c:
            c.execute(_CLAIMS.delete().where(_CLAIMS.c.key == key, _CLAIMS.c.worker == self.worker))

    # ----------------------------------------------------------------------------------- helpers

    def try_hold(self, key: str, since: float | None = None) -> Held | None:
        ok, _ = self.try_claim(key, since)
        return Held(self, key) if ok else None

    def hold(self, key: str, poll: float = 1.0) -> Held:
        """Wait until `key` is ours (its holder finished, released it or went stale)."""
        while (held := self.try_hold(key)) is None:
            time.sleep(poll)
        return held

    @contextmanager
    def lock(self, key: str, poll: float = 0.2) -> Iterator[None]:
        """A short critical section among all workers (released at the end; taken over if its holder died)."""
        held = self.hold(key, poll)
        try:
            yield
        finally:
            held.release()


class Held:
    """A claim this worker holds: a heartbeat thread inside `with`; `done`/`failed` record how it ended, and
    leaving without either (an interrupt, a bug) releases it for the next worker."""

    def __init__(self, claims: Claims, key: str) -> None:
        self.claims, self.key, self.ended = claims, key, False
        self._beat = Beat(heartbeat_interval(claims.grace), lambda: claims.beat(key))

    def done(self) -> None:
        self.claims.finish(self.key, "done")
        self.ended = True

    def failed(self, message: str) -> None:
        self.claims.finish(self.key, "failed", message)
        self.ended = True

    def release(self) -> None:
        self.claims.release(self.key)
        self.ended = True

    def __enter__(self) -> Held:
        self._beat.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._beat.__exit__()
        if not self.ended:
            with suppress(Exception):  # the database gone too: the claim goes stale and is taken over
                self.release()


def safe_url(url: str) -> str:
    """A database URL without its password (it goes into error messages and summaries)."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL: show it as given
        return url
