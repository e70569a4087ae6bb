"""`sentitune bench`: a tiny matrix (LoRA on gpt2-tiny-random, two seeds; a TF-IDF reference; one row that
fails) run through the CLI, and results that agree with the run directories they are read from; a three-class
bench (restaurant aspects: TF-IDF and a MiniLM probe) whose macro and per-class F1 and CI agree with scikit-learn on
its predictions (McNemar: tests/test_statistics.py); and a bench file whose bad rows are all named before anything
runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import BENCH_COMMON as COMMON
from conftest import BENCH_FINISHED as FINISHED
from conftest import (
    THREE_CLASSES,
    assert_one_line_error,
    interrupt_after_steps,
    run_cli,
    write_bench,
    write_labelled_reviews,
)
from conftest import bench_predictions as _predictions
from sklearn.metrics import f1_score

from sentitune.benching import BenchError, load_bench


def test_matrix_expansion_and_names(tmp_path: Path) -> None:
    path = write_bench(tmp_path, {
        "name": "unit", "set": ["data.max_length=64"],
        "matrix": {"model.spec": ["minilm", "org/some model"], "method.name": ["lora", "probe"], "train.seed": [1, 2]},
        "rows": [{"name": "tfidf", "set": ["method.name=tfidf"]}],
    })
    bench = load_bench(path)
    names = [r.name for r in bench.rows]
    assert names[:3] == ["minilm-lora-seed1", "minilm-lora-seed2", "minilm-probe-seed1"]
    assert names[4] == "org-some-model-lora-seed1" and names[-1] == "tfidf" and len(names) == 9
    row = bench.rows[2]
    assert (row.config.model.spec, row.config.method.name, row.config.train.seed) == ("minilm", "probe", 1)
    assert row.config.data.max_length == 64 and row.config.name == "minilm-probe-seed1"
    assert bench.rows[-1].config.method.name == "tfidf"


def test_duplicate_matrix_names_are_made_unique(tmp_path: Path) -> None:
    bench = load_bench(write_bench(tmp_path, {"name": "u", "matrix": {"model.spec": ["a/x", "b/x", "a-x"]}}))
    assert [r.name for r in bench.rows] == ["a-x", "b-x", "a-x-2"]


@pytest.mark.parametrize(("data", "expect"), [
    ({"name": "b", "matrix": {"train.seed": 3}}, "matrix.train.seed"),
    ({"name": "b", "matrix": {"train.seed": ["x"]}}, "train.seed"),
    ({"name": "b", "matrix": {"no.such": [1]}}, "unknown setting"),
    ({"name": "b/../c", "rows": [{"name": "r"}]}, "name"),
    ({"name": "b", "rows": [{"name": "r"}, {"name": "r"}]}, "used twice"),
    ({"name": "b", "rows": [{"name": "r", "set": "x=1"}]}, "rows[0].set"),
    ({"name": "b", "base": "missing.yaml", "rows": [{"name": "r"}]}, "base"),
    ({"name": "b", "matrx": {}}, "unknown key matrx"),
    ({"name": "b"}, "no rows"),
])
def test_bad_bench_files_give_one_line_errors(tmp_path: Path, data: dict, expect: str) -> None:
    path = write_bench(tmp_path, data)
    with pytest.raises(BenchError) as info:
        load_bench(path)
    message = str(info.value)
    assert message.startswith(str(path)) and expect in message and "\n" not in message


def test_a_bad_bench_file_is_exit_2_through_the_cli(tmp_path: Path) -> None:
    path = write_bench(tmp_path, {"name": "b", "matrix": {"method.name": ["nope"]}})
    code, _, err = run_cli(["bench", str(path), "--out", str(tmp_path / "out")])
    assert code == 2 and "method.name" in err and len(err.strip().splitlines()) == 1


def test_the_bench_runs_and_reports_the_failed_row(bench_run: tuple[Path, Path, int, str]) -> None:
    _, out, code, text = bench_run
    assert code == 1, text
    for name in ("lora-seed1", "lora-seed2", "tfidf", "zero-shot"):
        assert f"{name}: ran" in text, text
    failed = [line for line in text.splitlines() if "broken: failed: " in line]
    assert len(failed) == 1 and "no-such-model-xyz" in failed[0], text
    assert "Traceback" not in text
    for name in FINISHED:
        assert (out / name / "metrics.json").is_file()
    assert not (out / "broken" / "metrics.json").exists()


def test_results_agree_with_the_run_directories(bench_run: tuple[Path, Path, int, str]) -> None:
    _, out, _, _ = bench_run
    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    assert set(rows) == set(FINISHED) and results["not_reported"] == {"broken": "not finished (no metrics.json)"}
    with (out / "results.csv").open(newline="") as f:
        table = {r["name"]: r for r in csv.DictReader(f)}
    md = (out / "results.md").read_text()
    for name, row in rows.items():
        metrics = json.loads((out / name / "metrics.json").read_text())
        for key in ("n", "accuracy", "precision", "recall", "f1", "roc_auc"):
            assert row[key] == metrics["test"][key], (name, key)
            assert float(table[name][key]) == pytest.approx(metrics["test"][key], abs=1e-6)
        par = metrics.get("parameters", {})  # zero-shot trains nothing: no parameters, no timings
        assert row["trainable_parameters"] == par.get("trainable") and row["total_parameters"] == par.get("total")
        assert row["train_seconds"] == metrics.get("train_seconds")
        assert row["test_seconds"] == metrics.get("test_seconds")
        assert row["wall_seconds"] == metrics.get("wall_seconds") and row["wall_seconds"] > 0
        assert 0 <= row["accuracy_ci_low"] <= row["accuracy"] <= row["accuracy_ci_high"] <= 1
        assert f"| {name} |" in md and f"{metrics['test']['accuracy']:.4f}" in md
    assert rows["lora-seed1"]["train_tokens_per_second"] is not None and rows["tfidf"]["method"] == "tfidf"
    (group,) = results["seed_groups"]
    assert group["runs"] == ["lora-seed1", "lora-seed2"] and group["seeds"] == [1, 2]
    mean = (rows["lora-seed1"]["accuracy"] + rows["lora-seed2"]["accuracy"]) / 2
    assert group["accuracy_mean"] == pytest.approx(mean)
    assert "mean ± sd" in md and f"{mean:.4f}" in md


def test_a_second_run_skips_finished_rows_and_report_only_is_identical(
        bench_run: tuple[Path, Path, int, str]) -> None:
    path, out, _, _ = bench_run
    names = FINISHED
    before = {n: (out / n / "metrics.json").stat().st_mtime_ns for n in names}
    results = {f: (out / f).read_bytes() for f in ("results.json", "results.csv", "results.md")}
    code, stdout, _ = run_cli(["bench", str(path), "--out", str(out), "--no-progress"])
    assert code == 1  # the broken row fails again
    for n in names:
        assert f"{n}: skipped" in stdout
    assert {n: (out / n / "metrics.json").stat().st_mtime_ns for n in names} == before
    for f in results:
        (out / f).unlink()
    code, _, err = run_cli(["bench", str(path), "--out", str(out), "--report-only"])
    assert code == 0, err
    assert {f: (out / f).read_bytes() for f in results} == results


def test_report_only_without_a_bench_output_is_a_one_line_error(tmp_path: Path) -> None:
    path = write_bench(tmp_path, {"name": "b", "rows": [{"name": "r"}]})
    code, _, err = run_cli(["bench", str(path), "--out", str(tmp_path / "nothing"), "--report-only"])
    assert code == 2 and "nothing" in err and len(err.strip().splitlines()) == 1


def test_an_interrupted_row_is_resumed_from_its_checkpoint(tmp_path: Path, imdb_slice_archive: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    path = write_bench(tmp_path, {"name": "resume", "set": [*COMMON, f"data.path={imdb_slice_archive}",
                                                             "train.batch_size=2", "train.checkpoint_every=1"],
                                  "matrix": {"train.seed": [1]}})
    out = tmp_path / "out"
    step = interrupt_after_steps(monkeypatch, 2)
    code, _, err = run_cli(["bench", str(path), "--out", str(out), "--no-progress"])
    assert code == 130 and (out / "seed1" / "checkpoint.pt").is_file(), err
    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    code, stdout, err = run_cli(["bench", str(path), "--out", str(out), "--no-progress"])
    assert code == 0 and "seed1: resumed" in stdout, stdout + err
    assert (out / "seed1" / "metrics.json").is_file() and not (out / "seed1" / "checkpoint.pt").exists()
    assert [r["name"] for r in json.loads((out / "results.json").read_text())["rows"]] == ["seed1"]


def test_base_is_read_relative_to_the_bench_file(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "exp.yaml").write_text("model: {spec: gpt2-tiny-random}\ntrain: {lr: 0.01}\n")
    bench = load_bench(write_bench(tmp_path / "benches", {"name": "b", "base": "../configs/exp.yaml",
                                                          "matrix": {"train.lr": [0.02]},
                                                          "rows": [{"name": "plain"}]}))
    assert [(r.name, r.config.model.spec, r.config.train.lr) for r in bench.rows] == [
        ("lr0.02", "gpt2-tiny-random", 0.02), ("plain", "gpt2-tiny-random", 0.01)]


def test_a_finished_row_from_another_config_fails_instead_of_being_skipped(tmp_path: Path) -> None:
    from sentitune.benching import run_bench
    from sentitune.config import dump_yaml, load_config

    bench = load_bench(write_bench(tmp_path, {"name": "b", "rows": [{"name": "r", "set": ["train.seed=1"]}]}))
    run = tmp_path / "out" / "r"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_yaml(load_config(None, ["name=r", "train.seed=2"])))
    (run / "metrics.json").write_text("{}")
    (outcome,) = run_bench(bench, tmp_path / "out")
    assert outcome.status == "failed" and "another config" in outcome.message and str(run) in outcome.message
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["rows"] == [] and "not this bench row's config" in results["not_reported"]["r"]


def test_published_numbers_stand_beside_their_row(bench_run: tuple[Path, Path, int, str]) -> None:
    _, out, _, _ = bench_run
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["tfidf"]["published_accuracy"] == 0.9122 and rows["lora-seed1"]["published_accuracy"] is None
    assert "0.9122 (Wang & Manning 2012, NBSVM-bi)" in (out / "results.md").read_text()


@pytest.mark.parametrize("published", [{"accuracy": 91.2, "source": "x"}, {"accuracy": 0.9}, "0.9"])
def test_a_bad_published_entry_is_refused(tmp_path: Path, published: object) -> None:
    path = write_bench(tmp_path, {"name": "b", "rows": [{"name": "r", "published": published}]})
    with pytest.raises(BenchError, match=r"rows\[0\]\.published"):
        load_bench(path)


def test_a_row_can_name_its_own_base_config(tmp_path: Path) -> None:
    (tmp_path / "zs.yaml").write_text("name: zs\nmethod: {name: zero-shot}\nmodel: {spec: smollm2-135m}\n")
    (tmp_path / "base.yaml").write_text("name: b\nmethod: {name: probe}\n")
    bench = load_bench(write_bench(tmp_path, {"name": "b", "base": "base.yaml", "set": ["train.seed=3"], "rows": [
        {"name": "probe"}, {"name": "zs", "config": "zs.yaml", "set": ["data.eval_size=10"]}]}))
    probe, zs = bench.rows
    assert probe.config.method.name == "probe" and probe.base == tmp_path / "base.yaml"
    assert (zs.config.method.name, zs.config.model.spec, zs.config.data.eval_size) == ("zero-shot", "smollm2-135m", 10)
    assert zs.config.train.seed == 3 and zs.base == tmp_path / "zs.yaml"  # the bench's `set` applies to every row
    with pytest.raises(BenchError, match="missing.yaml not found"):
        load_bench(write_bench(tmp_path, {"name": "b", "rows": [{"name": "r", "config": "missing.yaml"}]}))


def test_rows_runs_only_the_named_rows(tmp_path: Path, imdb_slice_archive: Path) -> None:
    path = write_bench(tmp_path, {"name": "some", "set": [*COMMON, f"data.path={imdb_slice_archive}"],
                                  "rows": [{"name": "a", "set": ["method.name=tfidf"]},
                                           {"name": "b", "set": ["method.name=tfidf", "method.tfidf.variant=nb"]}]})
    out = tmp_path / "out"
    code, stdout, err = run_cli(["bench", str(path), "--out", str(out), "--rows", "b", "--no-progress"])
    assert code == 0 and "[1/1] b: ran" in stdout, err
    assert (out / "b" / "metrics.json").is_file() and not (out / "a").exists()
    assert [r["name"] for r in json.loads((out / "results.json").read_text())["rows"]] == ["b"]
    code, _, err = run_cli(["bench", str(path), "--out", str(out), "--rows", "b,zz"])
    assert code == 2 and "--rows: no row named 'zz'" in err and len(err.strip().splitlines()) == 1


def test_rows_that_share_a_frozen_prefix_share_its_feature_cache(tmp_path: Path, imdb_slice_archive: Path) -> None:
    """Two probe rows (different learning rates) freeze the same backbone: its states are computed once."""
    features = tmp_path / "features"
    path = write_bench(tmp_path, {
        "name": "shared", "set": [*COMMON, f"data.path={imdb_slice_archive}", "method.name=probe",
                                  "train.feature_cache=true", f"train.feature_cache_dir={features}"],
        "matrix": {"train.lr": [0.001, 0.01]}})
    code, stdout, err = run_cli(["bench", str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 0, stdout + err
    folders = sorted(p for p in features.iterdir() if (p / "meta.json").is_file())
    assert len(folders) == 3  # train, validation, test: once, not once per row
    first, second = (json.loads((tmp_path / "out" / n / "metrics.json").read_text()) for n in ("lr0.001", "lr0.01"))
    assert first["feature_cache"] and second["feature_cache"]
    assert first["test"]["n"] == second["test"]["n"] and first["test"]["roc_auc"] != second["test"]["roc_auc"]


# ------------------------------------------------------------------------------ macro-F1 and N classes


def _labels_and_preds(path: Path) -> tuple[list[int], list[int]]:
    pairs = list(_predictions(path).values())
    return [y for y, _ in pairs], [p for _, p in pairs]


def test_macro_f1_is_scikit_learns_on_each_rows_predictions(bench_run: tuple[Path, Path, int, str]) -> None:
    _, out, _, _ = bench_run
    results = json.loads((out / "results.json").read_text())
    with (out / "results.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        table = {r["name"]: r for r in reader}
    assert results["classes"] == [] and not [c for c in reader.fieldnames or [] if c.startswith("f1_")]
    md = (out / "results.md").read_text()
    assert "| F1 | macro-F1 | ROC AUC |" in md and "F1 per class" not in md  # binary: one more column, no table
    for row in results["rows"]:
        y, pred = _labels_and_preds(out / row["name"] / "predictions.csv")
        assert row["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", labels=[0, 1]), abs=1e-12)
        assert float(table[row["name"]]["macro_f1"]) == pytest.approx(row["macro_f1"], abs=1e-6)
        assert list(row["per_class"]) == ["negative", "positive"]
        assert row["per_class"]["positive"]["f1"] == pytest.approx(row["f1"])  # binary F1: the positive class's
        assert f"{row['macro_f1']:.4f}" in md
    (group,) = results["seed_groups"]
    seeds = [r["macro_f1"] for r in results["rows"] if r["name"] in group["runs"]]
    assert group["macro_f1_mean"] == pytest.approx(sum(seeds) / 2) and "macro-F1 | ROC AUC |" in md


def test_a_three_class_bench_reports_macro_and_per_class_f1(nclass_bench_run: tuple[Path, Path, int, str]) -> None:
    from sklearn.metrics import accuracy_score

    _, out, code, text = nclass_bench_run
    assert code == 0 and "Traceback" not in text, text
    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == ["tfidf-seed1", "tfidf-seed2", "tfidf-nb", "probe", "zero-shot"]
    assert not results["not_reported"]
    assert results["classes"] == THREE_CLASSES
    with (out / "results.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        table = {r["name"]: r for r in reader}
    columns = list(reader.fieldnames or [])
    assert columns[columns.index("macro_f1") + 1:][:3] == [f"f1_{n}" for n in THREE_CLASSES]
    md = (out / "results.md").read_text()
    for name, row in rows.items():
        y, pred = _labels_and_preds(out / name / "predictions.csv")
        metrics = json.loads((out / name / "metrics.json").read_text())["test"]
        assert row["accuracy"] == pytest.approx(accuracy_score(y, pred)) == metrics["accuracy"]
        assert row["accuracy_ci_low"] <= row["accuracy"] <= row["accuracy_ci_high"]
        assert row["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", labels=[0, 1, 2]), abs=1e-12)
        per_class = f1_score(y, pred, average=None, labels=[0, 1, 2])
        for i, class_name in enumerate(THREE_CLASSES):
            assert row["per_class"][class_name]["f1"] == pytest.approx(per_class[i], abs=1e-12)
            assert row["per_class"][class_name]["support"] == y.count(i)
            assert float(table[name][f"f1_{class_name}"]) == pytest.approx(per_class[i], abs=1e-6)
        assert f"| {name} | " + " | ".join(f"{v:.4f}" for v in per_class) + f" | {row['macro_f1']:.4f} |" in md
    heads = " | ".join(f"{n} (n={rows['probe']['per_class'][n]['support']})" for n in THREE_CLASSES)
    assert "## F1 per class" in md and f"| run | {heads} | macro-F1 |" in md
    (group,) = results["seed_groups"]
    assert group["runs"] == ["tfidf-seed1", "tfidf-seed2"]
    mean = (rows["tfidf-seed1"]["macro_f1"] + rows["tfidf-seed2"]["macro_f1"]) / 2
    assert group["macro_f1_mean"] == pytest.approx(mean)


# ------------------------------------------------------------------------------ bad rows, all at once


@pytest.fixture(scope="module")
def reviews(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic labelled reviews, a CSV of text,label."""
    return write_labelled_reviews(tmp_path_factory.mktemp("reviews") / "reviews.csv")


def test_a_bench_with_two_bad_rows_names_both_on_one_line_and_runs_nothing(tmp_path: Path, reviews: Path) -> None:
    path = write_bench(tmp_path, {
        "name": "bad", "set": ["model.spec=gpt2-tiny-random", f"data.source={reviews}", "data.max_length=32"],
        "rows": [{"name": "a", "set": ["method.name=tfidf", "train.lr=-1"]},
                 {"name": "good", "set": ["method.name=tfidf"]},
                 {"name": "c", "set": ["method.name=tfidf", "train.no_such_key=1"]}]})
    out = tmp_path / "out"
    code, stdout, err = run_cli(["bench", str(path), "--out", str(out)])
    line = assert_one_line_error(code, err, [str(path), "2 of 3 rows are invalid", "nothing ran", "row a: ",
                                             "train.lr", "row c: ", "no_such_key"])
    assert line.index("row a: ") < line.index("row c: ") and "row good" not in line
    assert not out.exists() and stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.yaml"]


def test_one_bad_row_is_still_named_with_its_error(tmp_path: Path) -> None:
    from sentitune.benching import BenchError, load_bench

    path = write_bench(tmp_path, {"name": "b", "rows": [{"name": "ok"}, {"name": "r", "config": "missing.yaml"}]})
    with pytest.raises(BenchError) as info:
        load_bench(path)
    message = str(info.value)
    assert message.startswith(f"{path}: 1 of 2 rows is invalid, nothing ran: row r: config: ")
    assert "missing.yaml not found" in message and "\n" not in message


def test_a_label_budget_is_training_plus_validation(tmp_path: Path) -> None:
    """`labels: N` gives a row N labelled reviews in all: a fifth (rounded up) validation, the rest training."""
    path = write_bench(tmp_path, {"name": "budget", "set": COMMON, "matrix": {"labels": [64, 1024]},
                                  "rows": [{"name": "small", "labels": 20}]})
    rows = {r.name: r.config.data for r in load_bench(path).rows}
    assert set(rows) == {"labels64", "labels1024", "small"}
    assert (rows["labels64"].train_size, rows["labels64"].val_size) == (51, 13)
    assert (rows["labels1024"].train_size, rows["labels1024"].val_size) == (819, 205)
    assert (rows["small"].train_size, rows["small"].val_size) == (16, 4)
    for bad in (3, "many", True):
        with pytest.raises(BenchError, match="labelled reviews, 0 or >= 4"):
            load_bench(write_bench(tmp_path / str(bad), {"name": "b", "set": COMMON, "matrix": {"labels": [bad]}}))
    # 0: no labelled review at all, for a row whose teacher labels its training reviews
    teacher = ["self_train.teacher=smollm2-135m", "data.unlabeled=pool"]
    none = load_bench(write_bench(tmp_path / "none", {"name": "b", "set": COMMON,
                                                      "rows": [{"name": "none", "labels": 0, "set": teacher}]}))
    assert (none.rows[0].config.data.train_size, none.rows[0].config.data.val_size) == (0, 0)


def test_the_learning_curve_has_a_line_per_method_and_a_point_per_budget(tmp_path: Path,
                                                                        imdb_slice_archive: Path) -> None:
    """Two methods at two budgets with two seeds each, and a prompt at 0 labels: results.json's curve, the
    table in results.md and the plot in the report, each point the mean of its rows."""
    path = write_bench(tmp_path, {
        "name": "curve", "set": [*COMMON, f"data.path={imdb_slice_archive}", "train.refuse_one_class=false"],
        "matrix": {"method.name": ["probe", "tfidf"], "labels": [12, 24], "train.seed": [1, 2]},
        "rows": [{"name": "prompt", "set": ["method.name=zero-shot", "zero_shot.calibration_size=4"]}]})
    out = tmp_path / "out"
    code, stdout, err = run_cli(["bench", str(path), "--out", str(out), "--no-progress"])
    assert code == 0, stdout + err
    results = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    assert rows["probe-labels12-seed1"]["labels"] == 12 and rows["prompt"]["labels"] == 0
    lines = {line["line"]: line for line in results["curve"]}
    assert set(lines) == {"probe", "tfidf", "prompt"}
    assert [p["labels"] for p in lines["prompt"]["points"]] == [0]
    for method in ("probe", "tfidf"):
        points = lines[method]["points"]
        assert [(p["labels"], p["seeds"]) for p in points] == [(12, 2), (24, 2)]
        for p in points:
            runs = [rows[f"{method}-labels{p['labels']}-seed{s}"] for s in (1, 2)]
            assert p["runs"] == [r["name"] for r in runs]
            assert p["accuracy_mean"] == pytest.approx(sum(r["accuracy"] for r in runs) / 2)
    md = (out / "results.md").read_text()
    assert "## Learning curve: accuracy against labelled reviews" in md
    assert "| 12 |" in md and "| 24 |" in md and "| 0 |" in md
    assert (out / "plots" / "learning_curve.png").stat().st_size > 1000
    assert "Test accuracy against labelled reviews" in (out / "report.html").read_text()


def test_one_budget_draws_no_curve(bench_run: tuple[Path, Path, int, str]) -> None:
    """A bench with no method at two budgets (its trained rows at 24 labels, a prompt at 0) is a table, not a
    curve: no curve in results.json, no section in results.md, no plot."""
    _, out, _, _ = bench_run
    results = json.loads((out / "results.json").read_text())
    assert {r["labels"] for r in results["rows"]} == {24, 0}
    assert results["curve"] == []
    assert "Learning curve" not in (out / "results.md").read_text()
    assert not (out / "plots" / "learning_curve.png").exists()
