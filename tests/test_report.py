"""Plots and the HTML report of a bench: the data behind each figure checked against the run directories,
the PNGs decoded, and the page loaded in a real headless browser (Debian's chromium): its tables, its
sorter and its embedded images must render from a file on disk, with no server. The three-class bench's
report too: one-vs-rest ROC, confusion matrices and a per-class F1 table."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import THREE_CLASSES, chromium, run_cli

from sentitune.plots import (
    LENGTH_BINS,
    MULTICLASS_PLOTS,
    PLOTS,
    accuracy_by_length,
    confusion,
    loss_curves,
    read_row,
    roc_points,
)


def browse(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = page.parent / ".chromium-home"  # a profile of its own: no state shared with a user's browser
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={home}", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(home)})


def test_loss_curves_continue_across_phases() -> None:
    log = [{"event": "baseline", "loss": 9.0},
           {"event": "train", "phase": 1, "step": 10, "epoch": 0.5, "loss": 0.7},
           {"event": "train", "phase": 1, "step": 20, "epoch": 1.0, "loss": 0.5},
           {"event": "validation", "phase": 1, "step": 20, "epoch": 1.0, "loss": 0.45},
           {"event": "train", "phase": 2, "step": 10, "epoch": 0.5, "loss": 0.4},
           {"event": "validation", "phase": 2, "step": 20, "epoch": 1.0, "loss": 0.35},
           {"event": "final", "split": "test", "loss": 0.3}]
    train, val = loss_curves(log)
    assert train == [(0.5, 0.7), (1.0, 0.5), (1.5, 0.4)] and val == [(1.0, 0.45), (2.0, 0.35)]


def test_plot_data_is_read_from_the_run_directory(bench_run: tuple[Path, Path, int, str]) -> None:
    _, out, _, _ = bench_run
    row = read_row("lora-seed1", out / "lora-seed1")
    with (out / "lora-seed1" / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(row.labels) == [int(r["label"]) for r in rows] and row.words is not None
    bins = accuracy_by_length(row)
    assert [n for _, n, _ in bins] == [sum(lo <= int(r["words"]) <= hi for r in rows) for lo, hi in LENGTH_BINS]
    for (_, n, acc), (lo, hi) in zip(bins, LENGTH_BINS, strict=True):
        inside = [r for r in rows if lo <= int(r["words"]) <= hi]
        assert acc == (pytest.approx(sum(r["pred"] == r["label"] for r in inside) / n) if n else None)
    log = [json.loads(line) for line in (out / "lora-seed1" / "log.jsonl").read_text().splitlines()]
    assert row.train_curve == [(r["epoch"], r["loss"]) for r in log if r["event"] == "train"]
    assert row.val_curve and row.train_curve  # the tiny run logs its one step and its validation


def test_the_frontier_is_the_best_accuracy_at_each_budget() -> None:
    from sentitune.plots import frontier

    points = [(10.0, 0.90), (1.0, 0.88), (30.0, 0.89), (2.0, 0.87), (45.0, 0.93), (1.0, 0.80)]
    assert frontier(points) == [(1.0, 0.88), (10.0, 0.90), (45.0, 0.93)]
    assert frontier([]) == []


def test_the_bench_writes_its_decodable_plots_and_a_report(bench_run: tuple[Path, Path, int, str]) -> None:
    import matplotlib.image

    _, out, _, text = bench_run
    assert f"report in {out}/report.html" in text
    for name in PLOTS:
        image = matplotlib.image.imread(out / "plots" / f"{name}.png")
        assert image.shape[0] > 200 and image.shape[1] > 300 and image.std() > 0.01, name  # not blank


def test_report_command_and_its_errors(bench_run: tuple[Path, Path, int, str], tmp_path: Path) -> None:
    _, out, _, _ = bench_run
    code, stdout, err = run_cli(["report", str(out), "--output", str(tmp_path / "r.html")])
    assert code == 0 and (tmp_path / "r.html").is_file() and "r.html" in stdout, err
    page = (tmp_path / "r.html").read_text()
    assert "<link" not in page and 'src="http' not in page and "src=\"data:image/png;base64," in page  # one file
    code, _, err = run_cli(["report", str(tmp_path)])
    assert code == 2 and "no results.json" in err and len(err.strip().splitlines()) == 1


def test_the_report_renders_in_a_real_browser(bench_run: tuple[Path, Path, int, str], tmp_path: Path) -> None:
    _, out, _, _ = bench_run
    page = tmp_path / "report.html"
    shutil.copy(out / "report.html", page)  # nothing beside it: the page must stand alone
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results["rows"]] == sorted(r["name"] for r in results["rows"])  # page order
    for order in ("-accuracy", "-name", "name"):  # so "-name" must reverse it: the sorter ran
        done = browse(page, "--virtual-time-budget=5000", "--dump-dom", f"{page.as_uri()}#sort={order}")
        assert done.returncode == 0, done.stderr[-2000:]
        dom = done.stdout
        images = f"{len(PLOTS)}/{len(PLOTS)}"  # a two-class bench: every plot but the confusion matrices
        assert re.search(f'<body[^>]*data-images="{images}"', dom), "every embedded plot decoded and drawn"
        table = dom[dom.index('id="results"'):]
        table = table[:table.index("</table>")]
        shown = re.findall(r'<tr><td data-sort="([^"]*)">', table)
        if order.endswith("name"):
            expected = sorted((r["name"] for r in results["rows"]), reverse=order.startswith("-"))
        else:  # descending accuracy, ties in page order (a stable sort)
            expected = [r["name"] for r in sorted(results["rows"], key=lambda r: -r["accuracy"])]
        assert shown == expected, order
        assert 'aria-sort="' + ("descending" if order.startswith("-") else "ascending") + '"' in table
    shot = tmp_path / "shot.png"
    done = browse(page, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), done.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1600, 1200)
    ink = (pixels[..., :3].mean(axis=2) < 0.5).mean()  # share of dark pixels: text, table lines, plot axes
    assert 0.005 < ink < 0.5, ink
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50  # more than text: plot colours


# ------------------------------------------------------------------------------ three classes


def test_three_class_plot_data_is_one_vs_rest_and_read_from_the_run(
        nclass_bench_run: tuple[Path, Path, int, str]) -> None:
    from sklearn.metrics import roc_auc_score

    _, out, _, _ = nclass_bench_run
    for name in ("probe", "tfidf-nb", "zero-shot"):
        row = read_row(name, out / name)
        with (out / name / "predictions.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        probs = np.array([[float(r[f"prob_{n}"]) for n in THREE_CLASSES] for r in rows])
        assert row.multiclass and row.classes == THREE_CLASSES and row.scores == pytest.approx(probs)
        metrics = json.loads((out / name / "metrics.json").read_text())["test"]
        fpr, tpr, auc = roc_points(row)
        assert auc == pytest.approx(roc_auc_score(row.labels, probs, multi_class="ovr", average="macro"), abs=1e-12)
        assert auc == pytest.approx(metrics["roc_auc"], abs=1e-4)  # predictions.csv keeps 6 decimals
        assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and np.all(np.diff(fpr) >= 0)
        assert confusion(row).tolist() == metrics["confusion_matrix"]
        bins = accuracy_by_length(row)
        assert sum(n for _, n, _ in bins) == len(rows)
        for (_, n, acc), (lo, hi) in zip(bins, LENGTH_BINS, strict=True):
            inside = [r for r in rows if lo <= int(r["words"]) <= hi]
            assert acc == (pytest.approx(sum(r["pred"] == r["label"] for r in inside) / n) if n else None)


def test_a_three_class_report_has_per_class_f1_and_confusion_matrices(
        nclass_bench_run: tuple[Path, Path, int, str], tmp_path: Path) -> None:
    import matplotlib.image

    _, out, _, _ = nclass_bench_run
    drawn = {**PLOTS, **MULTICLASS_PLOTS}  # every plot and the confusion matrices (no budget axis: no curve)
    for name in drawn:
        image = matplotlib.image.imread(out / "plots" / f"{name}.png")
        assert image.shape[0] > 200 and image.shape[1] > 300 and image.std() > 0.01, name
    page = tmp_path / "report.html"
    shutil.copy(out / "report.html", page)
    results = json.loads((out / "results.json").read_text())
    done = browse(page, "--virtual-time-budget=5000", "--dump-dom", f"{page.as_uri()}#sort=-macro_f1")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert re.search(rf'<body[^>]*data-images="{len(drawn)}/{len(drawn)}"', dom)
    expected = [r["name"] for r in sorted(results["rows"], key=lambda r: -r["macro_f1"])]
    for table_id in ("results", "classes"):  # both tables sort on macro-F1
        table = dom[dom.index(f'id="{table_id}"'):]
        table = table[:table.index("</table>")]
        assert re.findall(r'<tr><td data-sort="([^"]*)">', table) == expected, table_id
    classes = dom[dom.index('id="classes"'):]
    classes = classes[:classes.index("</table>")]
    probe = next(r for r in results["rows"] if r["name"] == "probe")
    assert all(f"F1 {n} (n={probe['per_class'][n]['support']})</th>" in classes for n in THREE_CLASSES)
    assert f"{probe['per_class']['neutral']['f1']:.4f}" in classes
