"""Run the fault-injection suites and print the counts quoted in docs/RELIABILITY.md.

    .venv/bin/python benchmarks/reliability.py            # every suite (~7-8 min on 2 CPU cores)
    .venv/bin/python benchmarks/reliability.py --only faults --only hardening
    .venv/bin/python benchmarks/reliability.py --write reliability-counts   # and into docs/RELIABILITY.md

Counts come from pytest's JUnit XML, one test case per bad input / kill / reproduced run, so the
table can only claim what a passing test checked.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from docs_block import publish
from machine import cpu_name, cpus_online

ROOT = Path(__file__).resolve().parents[1]
SUITES = {
    "faults": "tests/test_faults.py",
    "kills": "tests/test_kill_resume.py",
    "properties": "tests/test_properties.py",
    "hardening": "tests/test_hardening_data.py tests/test_hardening_runs.py tests/test_hardening_cli.py",
    "hardening2": "tests/test_hardening2.py tests/test_hardening2_serve_export_bench.py",
    "precision": "tests/test_precision.py",
}
# The hostile passes' regression cases, by the file that holds them.
HARDENING = {
    "test_hardening_data.py": "hardening: corrupt archives, checksums, one class, sizes",
    "test_hardening_runs.py": "hardening: --overwrite, checkpoints, resume, leftovers, modes",
    "test_hardening_cli.py": "hardening: CSV injection, damaged runs, permissions, disk full",
    # the second hostile pass
    "test_hardening2.py": "hardening 2: tables, settings, models, predict files, CSV and Markdown escaping",
    "test_hardening2_serve_export_bench.py": "hardening 2: serve JSON bodies, export folders, bench rows",
}
DOC = ROOT / "docs" / "RELIABILITY.md"


def run_suite(paths: str) -> tuple[list[tuple[str, str, bool]], float]:
    """(test file, test id, passed) for every case of the test files, and the wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *paths.split(),
                        f"--junitxml={xml}"],
                       cwd=ROOT, check=False, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        if not xml.exists():
            raise SystemExit(f"reliability: pytest wrote no report for {paths}")
        cases = []
        for case in ET.parse(xml).getroot().iter("testcase"):
            failed = any(child.tag in ("failure", "error", "skipped") for child in case)
            cases.append((case.get("classname", "").rsplit(".", 1)[-1] + ".py", case.get("name", ""), not failed))
    return cases, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SUITES), action="append", help="run only these suites")
    parser.add_argument("--write", metavar="BLOCK", help="also write the table into docs/RELIABILITY.md's BLOCK")
    args = parser.parse_args()
    rows: list[tuple[str, int, int, str]] = []
    ok = True
    for name in args.only or list(SUITES):
        found, seconds = run_suite(SUITES[name])
        ok &= all(passed for _, _, passed in found)
        cases = [(c, p) for _, c, p in found]
        timing = f"{seconds:.0f} s"
        if name == "faults":
            bad = [(c, p) for c, p in cases if c.startswith(("test_bad_input", "test_bad_run_directory"))]
            skip = [(c, p) for c, p in cases if c.startswith("test_empty_reviews_skipped")]
            rows.append(("bad inputs tried (exit 2, one-line error, no output left)", sum(p for _, p in bad),
                         len(bad), timing))
            rows.append(("empty reviews skipped with a count (data.empty=skip)", sum(p for _, p in skip),
                         len(skip), ""))
        elif name == "kills":
            kills = [(c, p) for c, p in cases if "sigkill" in c or "sigint" in c]
            # A chained case kills the run, resumes, kills the resumed run again: two kills.
            n_kills = sum(2 if "twice" in c else 1 for c, _ in kills)
            survived = sum((2 if "twice" in c else 1) for c, p in kills if p)
            rows.append(("kills survived (SIGKILL / SIGINT, then --resume)", survived, n_kills, timing))
            rows.append(("runs reproduced bit-for-bit (metrics, predictions, weights)", sum(p for _, p in cases),
                         len(cases), ""))
        elif name.startswith("hardening"):
            files = [f for f in HARDENING if f"tests/{f}" in SUITES[name].split()]
            for file in files:
                mine = [p for f, _, p in found if f == file]
                rows.append((HARDENING[file], sum(mine), len(mine), timing if file == files[0] else ""))
        elif name == "precision":
            rows.append(("precision: auto, fp32 inference the same across batches and CPUs", sum(p for _, p in cases),
                         len(cases), timing))
        else:
            rows.append(("property tests passed (hypothesis, 25 examples each)", sum(p for _, p in cases),
                         len(cases), timing))
    width = max(len(r[0]) for r in rows)
    lines = [f"{cpu_name()}, {cpus_online()} cores", "", f"| {'check':{width}} | passed | tried | suite time |",
             f"|{'-' * (width + 2)}|--------|-------|------------|"]
    lines += [f"| {label:{width}} | {passed:6d} | {tried:5d} | {timing:>10} |" for label, passed, tried, timing in rows]
    publish("\n".join(lines), DOC, args.write)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
