"""Statistics of test decisions (sentitune.statistics) as a bench reports them: McNemar's exact test against the
TF-IDF reference, for two and three classes, is scipy's binomial test on the rows' own predictions.csv, and each
class's F1 of a run whose metrics.json predates per_class is computed from its predictions. The benches are the
session's tiny ones (conftest `bench_run`, `nclass_bench_run`); the bootstrap interval's bounds are checked with the
bench's results (tests/test_bench.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import BENCH_FINISHED as FINISHED
from conftest import bench_predictions as _predictions
from scipy.stats import binomtest

from sentitune.benching import load_bench


def test_mcnemar_against_the_tfidf_reference(bench_run: tuple[Path, Path, int, str]) -> None:
    _, out, _, _ = bench_run
    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    assert results["reference"] == "tfidf" and rows["tfidf"]["mcnemar_p_vs_tfidf"] is None
    ref = _predictions(out / "tfidf" / "predictions.csv")
    other = _predictions(out / "lora-seed1" / "predictions.csv")
    assert set(other) == set(ref)  # same seed: the same test slice (data.eval_size samples by train.seed)
    b = sum(ref[i][1] == ref[i][0] and other[i][1] != other[i][0] for i in ref)
    c = sum(ref[i][1] != ref[i][0] and other[i][1] == other[i][0] for i in ref)
    expected = binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    assert 0 <= rows["lora-seed1"]["mcnemar_p_vs_tfidf"] <= 1
    assert rows["lora-seed1"]["mcnemar_p_vs_tfidf"] == pytest.approx(expected)
    # Seed 2 drew another test slice: no paired test, a blank cell.
    assert set(_predictions(out / "lora-seed2" / "predictions.csv")) != set(ref)
    assert rows["lora-seed2"]["mcnemar_p_vs_tfidf"] is None
    assert 0 <= rows["zero-shot"]["mcnemar_p_vs_tfidf"] <= 1  # seed 1 too: paired


def test_runs_from_before_macro_f1_get_it_from_their_predictions(bench_run: tuple[Path, Path, int, str],
                                                                  tmp_path: Path) -> None:
    """metrics.json written before macro_f1 and per_class existed: the bench computes both from predictions.csv."""
    from sentitune.benching import write_results

    path, out, _, _ = bench_run
    old = tmp_path / "out"
    shutil.copytree(out, old)
    for name in FINISHED:
        metrics = json.loads((old / name / "metrics.json").read_text())
        del metrics["test"]["macro_f1"], metrics["test"]["per_class"]
        (old / name / "metrics.json").write_text(json.dumps(metrics))
    again = {r["name"]: r for r in write_results(load_bench(path), old)["rows"]}
    for row in json.loads((out / "results.json").read_text())["rows"]:
        assert again[row["name"]]["macro_f1"] == pytest.approx(row["macro_f1"], abs=1e-12)
        for name, c in row["per_class"].items():
            assert again[row["name"]]["per_class"][name] == {"f1": pytest.approx(c["f1"]), "support": c["support"]}


def test_mcnemar_on_three_class_decisions(nclass_bench_run: tuple[Path, Path, int, str]) -> None:
    _, out, _, _ = nclass_bench_run
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    ref = _predictions(out / "tfidf-seed1" / "predictions.csv")
    for name in ("tfidf-nb", "probe", "zero-shot"):  # seed 1: the reference's test examples
        other = _predictions(out / name / "predictions.csv")
        assert set(other) == set(ref)
        b = sum(ref[i][1] == ref[i][0] and other[i][1] != other[i][0] for i in ref)
        c = sum(ref[i][1] != ref[i][0] and other[i][1] == other[i][0] for i in ref)
        assert rows[name]["mcnemar_p_vs_tfidf"] == pytest.approx(binomtest(b, b + c, 0.5).pvalue if b + c else 1.0)
    assert rows["tfidf-seed2"]["mcnemar_p_vs_tfidf"] is None  # another test slice
