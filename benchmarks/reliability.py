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
# The hostile passes' regression cases, one table row per part of a pass; each test lives in the file of the module
# it checks (tests/test_<module>.py), so a row names its tests as pytest node ids (every parametrized case of each).
HARDENING = {
    "hardening": {
        "hardening: corrupt archives, checksums, one class, sizes": [
            "tests/test_imdb.py::test_damaged_real_archive_is_corrupt",
            "tests/test_imdb.py::test_every_flipped_byte_is_an_error_or_harmless",
            "tests/test_imdb.py::test_sha256_sidecar",
            "tests/test_imdb.py::test_sha256_mismatch_through_cli",
            "tests/test_imdb.py::test_table_given_as_imdb_archive",
            "tests/test_data.py::test_one_class_is_refused",
            "tests/test_data.py::test_sizes_larger_than_the_data_are_reported",
        ],
        "hardening: --overwrite, checkpoints, resume, leftovers, modes": [
            "tests/test_runs.py::test_overwrite_refuses_a_folder_of_user_files",
            "tests/test_runs.py::test_overwrite_refuses_the_current_directory_and_its_parents",
            "tests/test_runs.py::test_overwrite_replaces_a_finished_run_and_keeps_user_files",
            "tests/test_runs.py::test_resume_refuses_a_crafted_checkpoint_without_running_it",
            "tests/test_runs.py::test_resume_reports_an_unloadable_checkpoint_on_one_line",
            "tests/test_runs.py::test_checkpoints_hold_plain_values_and_old_ones_still_load",
            "tests/test_runs.py::test_resume_refuses_a_finished_run",
            "tests/test_runs.py::test_resume_removes_leftovers_of_killed_writes",
            "tests/test_runs.py::test_outputs_follow_the_umask",
            "tests/test_atomic.py::test_renames_are_followed_by_an_fsync_of_their_folder",
            "tests/test_atomic.py::test_a_cache_folder_another_process_finished_first_is_kept",
        ],
        "hardening: CSV injection, damaged runs, permissions, disk full": [
            "tests/test_atomic.py::test_predict_output_neutralises_formula_cells",
            "tests/test_atomic.py::test_write_csv_guards_every_text_cell_and_leaves_numbers",
            "tests/test_atomic.py::test_run_predictions_neutralise_user_given_ids",
            "tests/test_saving.py::test_damaged_model_folder_is_one_line",
            "tests/test_saving.py::test_damaged_run_is_one_line_from_a_real_process",
            "tests/test_paths.py::test_permission_problem_is_one_line",
            "tests/test_atomic.py::test_train_disk_full_is_one_line_and_resume_finishes",
            "tests/test_atomic.py::test_checkpoint_write_on_a_full_disk_is_a_disk_full_error",
            "tests/test_atomic.py::test_a_write_on_a_full_disk_names_the_file",
            "tests/test_atomic.py::test_predict_output_disk_full_is_one_line",
            "tests/test_cli.py::test_os_and_memory_errors_are_one_line",
        ],
    },
    "hardening2": {  # the second hostile pass
        "hardening 2: tables, settings, models, predict files, CSV and Markdown escaping": [
            "tests/test_tabular.py::test_1_a_non_finite_label_of_three_classes_is_one_line",
            "tests/test_tabular.py::test_8_a_duplicate_column_is_an_error_not_the_second_column",
            "tests/test_tabular.py::test_a_duplicate_key_of_a_jsonl_row_is_an_error",
            "tests/test_tabular.py::test_a_csv_row_with_extra_fields_is_an_error",
            "tests/test_tabular.py::test_an_unterminated_quote_does_not_merge_rows",
            "tests/test_tabular.py::test_quotes_that_csv_allows_still_read",
            "tests/test_config.py::test_2_a_seed_out_of_range_is_one_line",
            "tests/test_config.py::test_12_head_tokens_that_do_nothing_are_refused",
            "tests/test_data.py::test_12_head_tokens_must_leave_room_for_the_tail_after_special_tokens",
            "tests/test_config.py::test_a_run_name_is_one_folder_under_runs",
            "tests/test_config.py::test_config_given_a_folder_says_so",
            "tests/test_registry.py::test_3_a_model_folder_without_tokenizer_files_is_one_line_before_the_run",
            "tests/test_classical.py::test_4_tfidf_on_texts_without_ngrams_is_one_line_and_writes_nothing",
            "tests/test_paths.py::test_5_predict_output_that_is_a_folder_is_refused_before_loading",
            "tests/test_atomic.py::test_6_class_names_in_predict_output_are_neutralised",
            "tests/test_inference.py::test_9_blank_lines_are_counted_and_rows_name_their_line",
            "tests/test_inference.py::test_10_a_bare_carriage_return_stays_inside_its_line",
            "tests/test_cli.py::test_predict_takes_texts_after_its_flags",
            "tests/test_atomic.py::test_7_published_source_in_results_csv_is_neutralised",
            "tests/test_markdown.py::test_13_results_md_tables_escape_pipes_and_html",
            "tests/test_markdown.py::test_13_search_md_escapes_its_choices",
            "tests/test_saving.py::test_11_two_runs_of_one_lora_config_write_the_same_adapter_config",
        ],
        "hardening 2: serve JSON bodies, export folders, bench rows": [
            "tests/test_serve_body.py::test_a_body_that_is_not_utf8_is_422_naming_where",
            "tests/test_serve_body.py::test_json_nested_100000_deep_is_422_naming_where",
            "tests/test_export.py::test_an_earlier_export_with_a_users_file_is_refused_and_the_file_kept",
            "tests/test_export.py::test_an_earlier_export_of_either_format_is_replaced",
            "tests/test_export.py::test_every_name_an_export_may_write_is_allowed",
            "tests/test_bench.py::test_a_bench_with_two_bad_rows_names_both_on_one_line_and_runs_nothing",
            "tests/test_bench.py::test_one_bad_row_is_still_named_with_its_error",
        ],
    },
}
SUITES = {  # test files, or node ids
    "faults": ["tests/test_faults.py", "tests/test_runs.py::test_bad_run_directory_fails_cleanly",
               "tests/test_runs.py::test_resume_after_a_kill_before_the_config_was_written"],
    "kills": ["tests/test_kill_resume.py"],
    "properties": ["tests/test_properties.py"],
    **{name: [test for tests in rows.values() for test in tests] for name, rows in HARDENING.items()},
    "precision": ["tests/test_precision.py"],
}
DOC = ROOT / "docs" / "RELIABILITY.md"


def run_suite(paths: list[str]) -> tuple[list[tuple[str, str, bool]], float]:
    """(test file, test id, passed) for every case of the test files or node ids, and the wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *paths,
                        f"--junitxml={xml}"],
                       cwd=ROOT, check=False, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        if not xml.exists():
            raise SystemExit(f"reliability: pytest wrote no report for {' '.join(paths)}")
        cases = []
        for case in ET.parse(xml).getroot().iter("testcase"):
            failed = any(child.tag in ("failure", "error", "skipped") for child in case)
            cases.append((case.get("classname", "").rsplit(".", 1)[-1] + ".py", case.get("name", ""), not failed))
    return cases, seconds


def table_rows(name: str, found: list[tuple[str, str, bool]], timing: str) -> list[tuple[str, int, int, str]]:
    """Suite `name`'s rows of the table, (check, passed, tried, suite time), from its cases (file, test id, passed)."""
    rows: list[tuple[str, int, int, str]] = []
    cases = [(c, p) for _, c, p in found]
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
    elif name in HARDENING:
        for i, (label, tests) in enumerate(HARDENING[name].items()):
            mine = [p for f, c, p in found if f"tests/{f}::{c.split('[', 1)[0]}" in tests]
            rows.append((label, sum(mine), len(mine), timing if i == 0 else ""))
    elif name == "precision":
        rows.append(("precision: auto, fp32 inference the same across batches and CPUs", sum(p for _, p in cases),
                     len(cases), timing))
    else:
        rows.append(("property tests passed (hypothesis, 25 examples each)", sum(p for _, p in cases),
                     len(cases), timing))
    return rows


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
        rows += table_rows(name, found, f"{seconds:.0f} s")
    width = max(len(r[0]) for r in rows)
    lines = [f"{cpu_name()}, {cpus_online()} cores", "", f"| {'check':{width}} | passed | tried | suite time |",
             f"|{'-' * (width + 2)}|--------|-------|------------|"]
    lines += [f"| {label:{width}} | {passed:6d} | {tried:5d} | {timing:>10} |" for label, passed, tried, timing in rows]
    publish("\n".join(lines), DOC, args.write)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
