"""Running a bench's rows, by one worker or many: each row claimed first, finished rows skipped, checkpointed
ones resumed (runset.plan_run), a failure recorded as one line while the other rows go on, and the results
files rewritten under a lock after every row."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentitune.benching.results import write_results
from sentitune.benching.rows import Bench, BenchError, BenchRow
from sentitune.claims import GRACE_SECONDS, Claims, ClaimsError
from sentitune.runset import Action, one_line, plan_run, run_planned


@dataclass
class Outcome:
    """What happened to one row: ran, resumed, skipped, failed (with the error's one-line message) or left
    (to another worker, which holds it, finished it or saw it fail: the message says which)."""

    row: str
    status: str
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


def _plan(row: BenchRow, run_dir: Path) -> Action:
    """done (skip), resume or start: a finished run directory of another config is an error, never overwritten."""
    return plan_run(run_dir, row.config, "error", BenchError, "bench row")


def _left(claims: Claims, key: str, row: str) -> Outcome:
    """A row this worker did not run, with who did (or does)."""
    claim = claims.get(key)
    if claim is None:
        return Outcome(row, "left", "released by another worker")
    what = {"running": "running in", "done": "done by", "failed": "failed in"}.get(claim.state, claim.state)
    return Outcome(row, "left", f"{what} {claim.worker}" + (f": {claim.message}" if claim.message else ""))


def run_bench(bench: Bench, out: Path, progress: bool = False,
              started: Callable[[BenchRow], None] = lambda r: None,
              finished: Callable[[Outcome], None] = lambda o: None,
              only: Collection[str] | None = None, workers_db: str | None = None,
              grace: float = GRACE_SECONDS, at_end: Callable[[Path], object] | None = None) -> list[Outcome]:
    """Run every row (or the rows named in `only`) into `out/<row>`: finished rows are skipped, checkpointed
    ones resumed, and a row that fails is recorded (one line) while the others go on. Each row is claimed in
    the claims database first, so several workers on one bench never train a row twice: rows held by live
    workers are left to them (tried once more at the end, in case their worker died meanwhile). The results
    files are rewritten after each row, from every finished row of the bench, under a lock; `at_end(out)`
    (the report) runs under the same lock when this worker is done, unless other workers still run rows."""
    from sentitune.training import Interrupted

    out.mkdir(parents=True, exist_ok=True)
    claims = _open_claims(out, workers_db, grace)
    lock = f"bench:{bench.name}:results"

    def attempt(row: BenchRow, last: bool) -> Outcome | None:
        """The row's outcome, or None when another worker holds it (and this is not the last pass)."""
        run_dir, key = out / row.name, f"bench:{bench.name}:{row.name}"
        started(row)
        try:
            if _plan(row, run_dir) == "done":
                claim = claims.get(key)
                by_other = (claim is not None and claim.worker != claims.worker and claim.state == "done"
                            and claims.this_round(claim))  # in this round, by another worker
                return _left(claims, key, row.name) if last or by_other else Outcome(row.name, "skipped")
            held = claims.try_hold(key, since=claims.started)
            if held is None:
                return _left(claims, key, row.name) if last else None
            with held:
                action = _plan(row, run_dir)
                if action == "done":  # finished by another worker between the look and the claim
                    held.done()
                    return _left(claims, key, row.name) if last else Outcome(row.name, "skipped")
                try:
                    metrics = run_planned(row.config, run_dir, action, progress, bench.name)
                except (Interrupted, KeyboardInterrupt):
                    raise
                except Exception as e:  # noqa: BLE001 - one failed row must not stop the bench
                    held.failed(one_line(e))
                    raise
                held.done()
                return Outcome(row.name, "resumed" if action == "resume" else "ran", metrics=metrics)
        except (Interrupted, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - one failed row must not stop the bench
            return Outcome(row.name, "failed", one_line(e))

    def record(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if outcome.status != "left":
            with claims.lock(lock):  # serialised: the last writer has seen every finished row
                write_results(bench, out)  # after every row: an interrupted bench still has its tables so far
        finished(outcome)

    outcomes: list[Outcome] = []
    others: list[BenchRow] = []
    for row in bench.rows:
        if only is not None and row.name not in only:
            continue
        outcome = attempt(row, last=False)
        if outcome is None:
            others.append(row)
        else:
            record(outcome)
    for row in others:  # a holder that died meanwhile: its row is taken over now
        outcome = attempt(row, last=True)
        assert outcome is not None
        record(outcome)
    with claims.lock(lock):
        write_results(bench, out)
        # The report is drawn by the worker that ends last: one that leaves rows running in live workers
        # leaves it to them (they see every row finished, since each marks its rows done before this lock).
        if at_end is not None and not [o for o in outcomes if o.status == "left" and _still_running(claims, bench, o)]:
            at_end(out)
    return outcomes


def _open_claims(out: Path, workers_db: str | None, grace: float) -> Claims:
    """The claims database the bench's workers share (default: sqlite:///OUT/claims.db)."""
    url = workers_db or f"sqlite:///{(out / 'claims.db').resolve()}"
    try:
        return Claims(url, grace)
    except ClaimsError as e:
        raise BenchError(str(e)) from None


def _still_running(claims: Claims, bench: Bench, outcome: Outcome) -> bool:
    claim = claims.get(f"bench:{bench.name}:{outcome.row}")
    return claim is not None and claim.state == "running" and claims.takeable(claim, claims.now()) is False
