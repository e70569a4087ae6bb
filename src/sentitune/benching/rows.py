"""A bench file -> its rows: each an ordinary experiment config (built and validated by `load_config`) and the
name of its run directory. The matrix is a cartesian product in file order; extra rows may bring their own base
config and a published number. Every row is checked before anything runs."""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentitune.coerce import read_yaml
from sentitune.config import ExperimentConfig
from sentitune.data.sources import load_experiment
from sentitune.errors import SentituneError
from sentitune.runset import SAFE_NAME, one_line, override, read_header, strings

BENCH_KEYS = ("name", "base", "set", "matrix", "rows")
LABELS_KEY = "labels"  # a matrix key (or a row's key) that is no setting: a label budget, train + validation
VALIDATION_SHARE = 0.2  # of a label budget, carved off for validation (rounded up: 64 -> 51 + 13)


class BenchError(SentituneError):
    """A bench file is missing, malformed, or names a setting that does not validate."""


@dataclass
class BenchRow:
    name: str
    overrides: list[str]
    config: ExperimentConfig
    base: Path | None = None  # the experiment YAML the overrides apply to
    published: dict[str, Any] | None = None  # {accuracy, source}: the literature's number for this setup


@dataclass
class Bench:
    name: str
    path: Path
    base: Path | None
    rows: list[BenchRow]


def slug(value: Any) -> str:
    """A filesystem-safe piece of a row name: `org/model` -> `org-model`, `[query, value]` -> `query-value`."""
    text = "-".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-.") or "x"


def _piece(key: str, value: Any) -> str:
    """Numbers are named by their key (`train.seed: 1` -> `seed1`): a bare `1` says nothing in a folder name."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return slug(f"{key.rsplit('.', 1)[-1]}{value}")
    return slug(value)


def label_budget(labels: Any, where: str) -> list[str]:
    """The overrides that give a run `labels` labelled reviews in all: a fifth (rounded up) for validation, the
    rest for training. Counting both is what a user with N labelled reviews has. 0: none at all (a self-trained
    student learns from its teacher's labels alone)."""
    if isinstance(labels, bool) or not isinstance(labels, int) or not (labels == 0 or labels >= 4):
        raise BenchError(f"{where}: expected a whole number of labelled reviews, 0 or >= 4 (train + validation), "
                         f"got {labels!r}")
    validation = math.ceil(VALIDATION_SHARE * labels)
    return [f"data.train_size={labels - validation}", f"data.val_size={validation}"]


def _overrides(key: str, value: Any, where: str) -> list[str]:
    return label_budget(value, f"{where}.{key}") if key == LABELS_KEY else [override(key, value)]


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return out


def expand(data: dict[str, Any], where: str) -> list[tuple[str, list[str], str | None, dict[str, Any] | None]]:
    """(row name, row overrides, row base config or None, published or None) for the matrix (cartesian
    product, in file order) and the explicit rows."""
    matrix = data.get("matrix") or {}
    if not isinstance(matrix, dict):
        raise BenchError(f"{where}: matrix: expected a mapping of config key -> list of values")
    for key, values in matrix.items():
        if not isinstance(values, list) or not values:
            raise BenchError(f"{where}: matrix.{key}: expected a non-empty list of values, got {values!r}")
    rows: list[tuple[str, list[str], str | None, dict[str, Any] | None]] = []
    if matrix:
        keys = list(matrix)
        combos = list(itertools.product(*(matrix[k] for k in keys)))
        names = _unique(["-".join(_piece(k, v) for k, v in zip(keys, combo, strict=True)) for combo in combos])
        rows = [(n, [o for k, v in zip(keys, combo, strict=True) for o in _overrides(k, v, f"{where}: matrix")],
                 None, None) for n, combo in zip(names, combos, strict=True)]
    extra = data.get("rows") or []
    if not isinstance(extra, list):
        raise BenchError(f"{where}: rows: expected a list of {{name, config, set}} mappings")
    for i, row in enumerate(extra):
        if not isinstance(row, dict) or set(row) - {"name", "set", "config", "published", LABELS_KEY}:
            raise BenchError(f"{where}: rows[{i}]: expected a mapping with name, config, set, labels and/or "
                             f"published, got {row!r}")
        published = row.get("published")
        if published is not None and not (
                isinstance(published, dict) and set(published) == {"accuracy", "source"}
                and isinstance(published["accuracy"], (int, float)) and 0 <= published["accuracy"] <= 1
                and isinstance(published["source"], str)):
            raise BenchError(f"{where}: rows[{i}].published: expected {{accuracy: 0..1, source: text}}, "
                             f"got {published!r}")
        config = row.get("config")
        if config is not None and not isinstance(config, str):
            raise BenchError(f"{where}: rows[{i}].config: expected a path to an experiment YAML, got {config!r}")
        name = row.get("name")
        if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
            raise BenchError(f"{where}: rows[{i}].name: {name!r} is not a folder-safe name (letters, digits, . _ -)")
        budget = label_budget(row[LABELS_KEY], f"{where}: rows[{i}]") if LABELS_KEY in row else []
        rows.append((name, budget + strings(row.get("set"), f"{where}: rows[{i}].set", BenchError), config,
                     published))
    taken = [n for n, *_ in rows]
    if dup := next((n for n in taken if taken.count(n) > 1), None):
        raise BenchError(f"{where}: rows: the name {dup!r} is used twice")
    if not rows:
        raise BenchError(f"{where}: no rows: give a matrix, rows, or both")
    return rows


def load_bench(path: str | Path) -> Bench:
    """Read and check a bench file; every row's config is built (and validated) before anything runs.

    Every row is checked, and the bad ones are named together on one line: a user who fixes the first bad
    row of a long bench should not meet the next one only on the following try.
    """
    path = Path(path)
    data = read_yaml(path, BenchError, "bench file")
    name, base_path, common = read_header(path, data, BENCH_KEYS, BenchError, "name, matrix and/or rows")
    rows, bad = [], []
    expanded = expand(data, str(path))
    for row_name, overrides, row_base, published in expanded:
        config_path = (path.parent / row_base) if row_base else base_path  # base_path: checked by read_header
        everything = [*common, *overrides, f"name={row_name}"]
        try:
            if row_base and not config_path.is_file():
                raise BenchError(f"config: {config_path} not found")
            cfg = load_experiment(config_path, everything)
        except SentituneError as e:
            bad.append(f"row {row_name}: {one_line(e)}")
            continue
        rows.append(BenchRow(row_name, everything, cfg, config_path, published))
    if bad:
        count = f"{len(bad)} of {len(expanded)} rows {'is' if len(bad) == 1 else 'are'} invalid"
        raise BenchError(f"{path}: {count}, nothing ran: {'; '.join(bad)}")
    return Bench(name, path, base_path, rows)
