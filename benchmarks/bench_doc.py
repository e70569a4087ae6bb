"""What a script that writes a doc section from a bench shares: its command line (`--no-run`, `--rows`) and
running the bench through the real CLI first (finished rows are skipped; a failed row, exit 1, is in the results)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any


def arguments(doc: str) -> argparse.Namespace:
    """`--no-run` (only rewrite the section from the finished rows) and `--rows a,b` (run only these first)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--no-run", action="store_true", help="only rewrite the section from the finished rows")
    parser.add_argument("--rows", help="comma-separated bench rows to run (default: all)")
    return parser.parse_args()


def run_bench(bench: Path, out: Path, rows: str | None, cwd: Path) -> None:
    """`sentitune bench BENCH --out OUT [--rows ROWS]`; exits with its code unless it is 0 or 1."""
    command = [str(Path(sys.executable).parent / "sentitune"), "bench", str(bench), "--out", str(out),
               "--no-progress", *(["--rows", rows] if rows else [])]
    done = subprocess.run(command, check=False, cwd=cwd)
    if done.returncode not in (0, 1):  # 1: a row failed; results.md says which
        raise SystemExit(done.returncode)


def refreshed_results(doc: str, bench: Path, out: Path, cwd: Path) -> dict[str, Any]:
    """The script's command line read, the bench run (unless --no-run), and its results rewritten from the
    run directories: what every such script starts with."""
    from sentitune.benching import load_bench, write_results

    args = arguments(doc)
    if not args.no_run:
        run_bench(bench, out, args.rows, cwd)
    return write_results(load_bench(bench), out)
