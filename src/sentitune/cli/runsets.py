"""Commands on many runs: `bench` (a matrix of runs), `report` (its HTML page) and `search` (Optuna trials)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cmd_bench(args: argparse.Namespace) -> int:
    from sentitune.benching import load_bench
    from sentitune.errors import writing

    bench = load_bench(args.bench_file)
    out = args.out or Path("runs") / "bench" / bench.name
    with writing(out):
        return _bench(args, bench, out)


def _bench(args: argparse.Namespace, bench: Any, out: Path) -> int:
    from sentitune.benching import BenchError, Outcome, run_bench, write_results

    if args.report_only:
        if not out.is_dir():
            raise BenchError(f"{out}: no bench output to report on (run the bench first, or give its --out)")
        results = write_results(bench, out)
        print(f"{len(results['rows'])} finished runs; results in {out}/results.md, report in {_report(out)}")
        return 0
    names = [r.name for r in bench.rows]
    if args.rows:
        wanted = {n.strip() for n in args.rows.split(",") if n.strip()}
        if unknown := [n for n in sorted(wanted) if n not in names]:
            raise BenchError(f"{args.bench_file}: --rows: no row named {unknown[0]!r} (rows: {', '.join(names)})")
        names = [n for n in names if n in wanted]
    total = len(names)
    print(f"bench {bench.name}: {total} rows -> {out}", flush=True)

    def finished(o: Outcome) -> None:
        number = names.index(o.row) + 1
        accuracy = o.metrics.get("test", {}).get("accuracy") if o.metrics else None
        detail = f": {o.message}" if o.message else (f" (accuracy {accuracy:.4f})" if accuracy is not None else "")
        print(f"[{number}/{total}] {o.row}: {o.status}{detail}", flush=True)

    if args.grace is not None and args.grace <= 0:
        raise BenchError(f"--grace: expected a number of seconds > 0, got {args.grace}")
    reports: list[Path] = []
    outcomes = run_bench(bench, out, progress=not args.no_progress, finished=finished,
                         only=set(names) if args.rows else None, workers_db=args.workers_db,
                         at_end=lambda o: reports.append(_report(o)), **({"grace": args.grace} if args.grace else {}))
    failed = [o.row for o in outcomes if o.status == "failed"]
    left = [o.row for o in outcomes if o.status == "left"]
    print(f"results in {out}/results.md" + (f", report in {reports[0]}" if reports else
                                             " (the report: by the worker that ends last)")
          + (f"; {len(failed)} failed: {', '.join(failed)}" if failed else "")
          + (f"; {len(left)} left to other workers: {', '.join(left)}" if left else ""))
    return 1 if failed else 0


def _report(bench_dir: Path, output: Path | None = None) -> Path:
    from sentitune.report import write_report

    return write_report(bench_dir, output)


def cmd_report(args: argparse.Namespace) -> int:
    from sentitune.errors import writing

    with writing(args.output or args.bench_dir):
        print(f"report in {_report(args.bench_dir, args.output)}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from sentitune.errors import writing
    from sentitune.paths import ensure_writable_dir
    from sentitune.search import SearchError, TrialOutcome, load_search, run_search
    from sentitune.training import Interrupted

    if args.trials is not None and args.trials < 1:
        raise SearchError(f"--trials: expected a whole number >= 1, got {args.trials}")
    if args.grace is not None and args.grace <= 0:
        raise SearchError(f"--grace: expected a number of seconds > 0, got {args.grace}")
    search = load_search(args.search_file)
    out = args.out or Path("runs") / "search" / search.name
    ensure_writable_dir(out)

    def finished(o: TrialOutcome) -> None:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in o.params.items())
        detail = f": {o.message}" if o.message else f", validation {search.metric} {o.value:.4f}"
        print(f"[trial {o.number}] {params}: {o.status}{detail} ({o.run})", flush=True)

    try:
        with writing(out):
            result, final = run_search(search, out, args.trials, args.storage, progress=not args.no_progress,
                                       report=lambda line: print(line, flush=True), finished=finished,
                                       **({"grace": args.grace} if args.grace else {}))
    except (Interrupted, KeyboardInterrupt):  # the trial's checkpoint is kept and its settings queued again
        raise Interrupted("interrupted; run the same command again to continue the search") from None
    if final.status == "failed":
        print(f"best: failed: {final.message}", flush=True)
        return 1
    test = final.metrics.get("test") or {}
    scores = ", ".join(f"{k} {test[k]:.4f}" for k in ("accuracy", "roc_auc") if test.get(k) is not None)
    print(f"best: trial {final.trial} (validation {search.metric} {final.value:.4f}): {final.status}; test "
          f"{scores} on {test.get('n')} reviews ({out / 'best'})")
    print(f"summary in {out}/search.md ({len(result['trials'])} trials in the study)")
    return 0
