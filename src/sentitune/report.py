"""`sentitune report BENCH_DIR`: one self-contained HTML page from a bench's results and run directories.

Why one file: a report is mailed, attached to an issue, or opened from a laptop's disk; it must need no
server, no network and no folder beside it. So the plots are embedded as PNG data URIs, the styles and
the (small, dependency-free) column sorter are inline. Sorting also follows the page's address:
`report.html#sort=accuracy` (or `#sort=-accuracy`, descending) opens sorted, which makes links to a
view shareable and lets a headless browser test the sorter.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from sentitune.atomic import write_text
from sentitune.benching import SEED_METRICS, class_cell, class_heads
from sentitune.errors import SentituneError
from sentitune.plots import CAPTIONS, LENGTH_BINS, RowData, accuracy_by_length, draw_all, length_label, read_row

REPORT_NAME = "report.html"
# (results.json key, header, digits or None for text): the sortable results table.
COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("name", "run", None), ("model", "model", None), ("method", "method", None), ("seed", "seed", 0),
    ("n", "test n", 0), ("accuracy", "accuracy", 4), ("accuracy_ci_low", "CI low", 4),
    ("accuracy_ci_high", "CI high", 4), ("precision", "precision", 4), ("recall", "recall", 4), ("f1", "F1", 4),
    ("macro_f1", "macro-F1", 4), ("roc_auc", "ROC AUC", 4), ("trainable_parameters", "trainable", 0),
    ("total_parameters", "total", 0),
    ("train_seconds", "train s", 1), ("test_seconds", "test s", 1), ("train_tokens_per_second", "tokens/s", 0),
    ("mcnemar_p_vs_tfidf", "McNemar p", -3), ("published_accuracy", "published", 4),
)


class ReportError(SentituneError):
    """The folder is not a bench output (no readable results.json)."""


def _results(bench_dir: Path) -> dict[str, Any]:
    path = bench_dir / "results.json"
    if not path.is_file():
        raise ReportError(f"{bench_dir}: no results.json (run `sentitune bench BENCH.yaml --out {bench_dir}` first)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: unreadable ({e})") from None
    if not isinstance(results, dict) or not isinstance(results.get("rows"), list):
        raise ReportError(f"{path}: not a sentitune bench results file (no rows)")
    return results


def _format(value: Any, digits: int | None) -> tuple[str, str]:
    """(shown text, sort key): numbers sort as numbers, blanks last."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", ""
    if digits is None or not isinstance(value, (int, float)):
        return html.escape(str(value)), html.escape(str(value))
    if digits < 0:  # significant digits: p-values span orders of magnitude
        return f"{value:.{-digits}g}", repr(float(value))
    return f"{value:,.{digits}f}", repr(float(value))


def _table(columns: list[tuple[str, str]], rows: list[list[tuple[str, str]]], table_id: str) -> str:
    head = "".join(f'<th data-key="{key}" title="click to sort">{html.escape(label)}</th>' for key, label in columns)
    body = "".join("<tr>" + "".join(f'<td data-sort="{key}">{shown}</td>' for shown, key in row) + "</tr>"
                   for row in rows)
    return f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _image(path: Path, title: str, wide: bool = False) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    kind = " class=wide" if wide else ""
    return (f'<figure{kind}><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def _class_table(results: dict[str, Any]) -> str:
    """Each class's F1 per row (benches with more than two classes), sortable like the results."""
    classes = results.get("classes") or []
    columns = [("name", "run"), *((f"f1_{i}", f"F1 {head}") for i, head in enumerate(class_heads(results))),
               ("macro_f1", "macro-F1")]
    rows = [[_format(r["name"], None), *(_format(class_cell(r, name), 4) for name in classes),
             _format(r.get("macro_f1"), 4)] for r in results["rows"]]
    return _table(columns, rows, "classes")


def _length_table(results: dict[str, Any], data: dict[str, RowData]) -> str:
    labels = [length_label(low, high) for low, high in LENGTH_BINS]
    columns = [("name", "run")] + [(f"len{i}", f"{label} words") for i, label in enumerate(labels)]
    rows = []
    for r in results["rows"]:
        bins = accuracy_by_length(data[r["name"]]) if r["name"] in data else []
        if not bins:
            continue
        rows.append([_format(r["name"], None)] + [
            (f"{acc:.4f} <small>({n:,})</small>", repr(acc)) if acc is not None else ("", "") for _, n, acc in bins])
    return _table(columns, rows, "lengths") if rows else "<p>No row has review lengths.</p>"


SCRIPT = """
function sortTable(table, key, descending) {
  const th = [...table.tHead.rows[0].cells];
  const index = th.findIndex(c => c.dataset.key === key);
  if (index < 0) return false;
  const rows = [...table.tBodies[0].rows];
  const value = r => r.cells[index].dataset.sort;
  rows.sort((a, b) => {
    const x = value(a), y = value(b);
    if (x === "" || y === "") return (x === "") - (y === "");
    const nx = Number(x), ny = Number(y);
    const c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
    return descending ? -c : c;
  });
  rows.forEach(r => table.tBodies[0].appendChild(r));
  th.forEach(c => c.removeAttribute("aria-sort"));
  th[index].setAttribute("aria-sort", descending ? "descending" : "ascending");
  return true;
}
document.querySelectorAll("table.sortable th").forEach(th => th.addEventListener("click", () => {
  const table = th.closest("table");
  sortTable(table, th.dataset.key, th.getAttribute("aria-sort") === "ascending");
}));
function fromAddress() {
  const m = location.hash.match(/sort=(-?)([A-Za-z0-9_]+)/);
  if (m) document.querySelectorAll("table.sortable").forEach(t => sortTable(t, m[2], m[1] === "-"));
}
window.addEventListener("hashchange", fromAddress);
fromAddress();
window.addEventListener("load", () => {
  const images = [...document.images];
  const drawn = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.images = drawn + "/" + images.length;
});
"""

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 12.5px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; max-width: 48%; }
figure.wide { max-width: 98%; }
img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 12px; color: #555; }
"""


def render(results: dict[str, Any], data: dict[str, RowData], images: dict[str, Path]) -> str:
    """The page's HTML from results.json, the rows' data and the drawn plots."""
    columns = [(key, label) for key, label, _ in COLUMNS]
    rows = [[_format(r.get(key), digits) for key, _, digits in COLUMNS] for r in results["rows"]]
    name = html.escape(str(results.get("bench", "bench")))
    boot = results.get("bootstrap", {})
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>sentitune bench {name}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Bench <code>{name}</code></h1>",
        f"<p>{len(results['rows'])} rows, generated by <code>sentitune report</code> from the run directories. "
        f"CI: {int(100 * boot.get('level', 0.95))}% percentile bootstrap of the accuracy over test reviews "
        f"({boot.get('resamples', '?')} resamples). McNemar p: exact test against the classical reference "
        f"<code>{html.escape(str(results.get('reference')))}</code> on the same test reviews. Click a column "
        "header to sort.</p>",
    ]
    if results.get("classes"):
        parts += ["<p>With more than two classes, precision, recall and F1 are macro averages over the classes (F1 "
                  "is macro-F1), ROC AUC is one-vs-rest (macro), and accuracy, its CI and McNemar use the most "
                  "probable class.</p>"]
    parts += ["<h2>Results</h2>", _table(columns, rows, "results")]
    if results.get("classes"):
        parts += ["<h2>F1 per class</h2>", _class_table(results)]
    if results.get("seed_groups"):
        heads = {"accuracy": "accuracy", "macro_f1": "macro-F1", "roc_auc": "ROC AUC"}
        seed_cols = [("group", "runs"), ("seeds", "seeds"),
                     *((f"{m}_{s}", f"{heads[m]} {s}") for m in SEED_METRICS for s in ("mean", "sd"))]
        seed_rows = [[_format(g["group"], None), _format(", ".join(map(str, g["seeds"])), None),
                      *(_format(g.get(k), 4) for k, _ in seed_cols[2:])] for g in results["seed_groups"]]
        parts += ["<h2>Across seeds (mean ± sd)</h2>", _table(seed_cols, seed_rows, "seeds")]
    parts += ["<h2>Accuracy by review length</h2>", _length_table(results, data), "<h2>Plots</h2>"]
    parts += [_image(path, CAPTIONS[key], wide=key == "curves") for key, path in images.items()]
    if results.get("not_reported"):
        parts += ["<h2>Not reported</h2><ul>"] + [f"<li><code>{html.escape(k)}</code>: {html.escape(str(v))}</li>"
                                                 for k, v in results["not_reported"].items()] + ["</ul>"]
    parts += [f"<script>{SCRIPT}</script></body></html>"]
    return "\n".join(parts)


def write_report(bench_dir: str | Path, out: str | Path | None = None) -> Path:
    """Plots into BENCH_DIR/plots/ and the page into `out` (default BENCH_DIR/report.html)."""
    bench_dir = Path(bench_dir)
    results = _results(bench_dir)
    data: dict[str, RowData] = {}
    for r in results["rows"]:
        try:
            data[r["name"]] = read_row(r["name"], bench_dir / r["name"])
        except (OSError, ValueError, KeyError) as e:  # one damaged run must not hide the others
            results.setdefault("not_reported", {})[r["name"]] = f"plots: unreadable run directory ({e})"
    images = draw_all(results, data, bench_dir / "plots")
    target = Path(out) if out else bench_dir / REPORT_NAME
    write_text(target, render(results, data, images))
    return target
