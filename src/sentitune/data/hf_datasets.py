"""Hugging Face `datasets` as a source: `hf:NAME[:CONFIG]` (the hub, or a local dataset folder), a folder written
by `Dataset.save_to_disk`, and Parquet files.

Why one module for three formats: each gives the same thing (named splits, typed columns, a `ClassLabel` with the
class names), so the split mapping (train / validation / test, a test split without labels), the column mapping
(data.text_column, data.label_column) and the class names are decided once, here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sentitune.config import BINARY_LABELS, DataConfig
from sentitune.data.records import Example
from sentitune.data.tabular import parse_label
from sentitune.errors import DataError
from sentitune.extras import require

PARQUET_SUFFIXES = (".parquet", ".pq")
UNLABELED_SPLITS = ("unsupervised", "unsup", "unlabeled")  # the hub's names for reviews without labels (imdb's)
MISSING_LABELS = (-1, None)  # what a hub dataset stores for a hidden label (GLUE's test splits)
AUTO = "auto"


def is_dataset_source(source: str) -> bool:
    """`hf:...`, a Parquet file, or a `save_to_disk` folder (its dataset_dict.json or state.json)."""
    if source.startswith("hf:"):
        return True
    path = Path(source)
    return path.suffix.lower() in PARQUET_SUFFIXES or _saved_folder(path)


def _saved_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def _library() -> Any:
    require("hub", "a Hugging Face dataset, Parquet or save_to_disk source")
    import datasets

    return datasets


def open_splits(cfg: DataConfig) -> dict[str, Any]:
    """Split name -> `datasets.Dataset` of data.source (and data.test_path, a second file or folder: "test")."""
    found = dict(_open(cfg.source))
    if cfg.test_path:
        test = _open(cfg.test_path)
        if len(test) != 1:
            raise DataError(f"{cfg.test_path}: data.test_path holds {len(test)} splits ({', '.join(test)}); give one "
                            "split's file or folder, or name it with data.test_split")
        found["test"] = next(iter(test.values()))
    return found


def _open(source: str) -> dict[str, Any]:
    datasets = _library()
    try:
        if source.startswith("hf:"):
            name, _, config = source[3:].partition(":")
            with _hub_quiet():  # an unreachable hub: our one line below, not its retry warnings too
                loaded = datasets.load_dataset(name, config or None)
        elif Path(source).suffix.lower() in PARQUET_SUFFIXES:
            if not Path(source).is_file():
                raise DataError(f"{source}: no such file")
            loaded = datasets.load_dataset("parquet", data_files={"train": source})
        else:
            loaded = datasets.load_from_disk(source)
    except DataError:
        raise
    except Exception as e:  # the hub and the readers raise many types: offline, unknown name, config, corrupt file
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        where = "the hub or this folder" if source.startswith("hf:") else "it"
        raise DataError(f"{source}: cannot load {where} ({type(e).__name__}: {first})"
                        + ("; offline, use the IMDb archive (data.source=imdb)" if source == "hf:imdb" else "")
                        ) from None
    if isinstance(loaded, datasets.Dataset):  # one split: save_to_disk of a Dataset, or a single Parquet file
        return {"train": loaded}
    return dict(loaded)


@contextlib.contextmanager
def _hub_quiet() -> Iterator[None]:
    hub = logging.getLogger("huggingface_hub")
    level = hub.level
    hub.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub.setLevel(level)


def class_names(cfg: DataConfig) -> list[str] | None:
    """The label column's `ClassLabel` names in the training split (binary ones as sentitune's own names, so a
    hub imdb's neg/pos is the archive's negative/positive); None: the column has no names."""
    found = open_splits(cfg)
    split = cfg.train_split if cfg.train_split in found else next(iter(found))
    feature = found[split].features.get(cfg.label_column)
    names = list(getattr(feature, "names", None) or [])
    if not names:
        return None
    if [n.lower() for n in names] in (["neg", "pos"], BINARY_LABELS):
        return list(BINARY_LABELS)
    return names


def read_dataset(cfg: DataConfig) -> tuple[dict[str, list[Example]], list[str]]:
    """The roles (train, optional validation and test, optional unsup) as Examples, and notes for the user on
    what the split mapping chose."""
    found = open_splits(cfg)
    notes: list[str] = []
    _require_split(cfg, found, cfg.train_split, "data.train_split")
    test = _pick_test(cfg, found, notes)
    validation = _pick_validation(cfg, found, test)
    out = {"train": _examples(cfg, found, cfg.train_split)}
    if validation:
        out["validation"] = _examples(cfg, found, validation)
        notes.append(f"validation: the dataset's {validation!r} split ({len(out['validation'])} examples; "
                     "data.validation_split=null carves it from train instead)")
    out["test"] = _examples(cfg, found, test) if test else []
    unlabeled = next((s for s in UNLABELED_SPLITS if s in found), None)
    if unlabeled and cfg.unlabeled == "unsup":
        ds = found[unlabeled]
        _column(cfg, ds, unlabeled, cfg.text_column)
        out["unsup"] = [Example(id=f"{unlabeled}/{i}", text=t, label=-1) for i, t in enumerate(ds[cfg.text_column])]
    return out, notes


def _require_split(cfg: DataConfig, found: dict[str, Any], name: str, setting: str) -> None:
    if name not in found:
        raise DataError(f"{cfg.source}: no split {name!r} ({setting}); splits: {', '.join(found)}")


def _labeled(cfg: DataConfig, ds: Any) -> bool:
    """A split whose labels are present (GLUE's test splits store -1 for every hidden label)."""
    if cfg.label_column not in ds.column_names:
        return False
    return any(v not in MISSING_LABELS for v in ds.unique(cfg.label_column))


def _pick_test(cfg: DataConfig, found: dict[str, Any], notes: list[str]) -> str | None:
    """data.test_split: a named split (it must have labels); auto: `test`, or, when its labels are hidden,
    `validation` (as GLUE users score); None: held out of train (data.test_path is `test`)."""
    name = cfg.test_split
    if name is None:
        return None
    if name != AUTO:
        _require_split(cfg, found, name, "data.test_split")
        if not _labeled(cfg, found[name]):
            raise DataError(f"{cfg.source}: split {name!r} (data.test_split) has no labels in column "
                            f"{cfg.label_column!r}: nothing to score against")
        return name
    if "test" in found and _labeled(cfg, found["test"]):
        return "test"
    if "validation" in found and _labeled(cfg, found["validation"]) and cfg.validation_split in (AUTO, None):
        why = "has no labels" if "test" in found else "is missing"
        notes.append(f"test: the dataset's 'validation' split (its 'test' split {why}); validation is carved "
                     "from train")
        return "validation"
    notes.append(f"test: held out of {cfg.train_split!r} (the dataset has no labelled test split)")
    return None


def _pick_validation(cfg: DataConfig, found: dict[str, Any], test: str | None) -> str | None:
    """data.validation_split: a named split; auto: `validation` when it has labels and is not the test;
    None: carved from train (data.val_size), as for every other source."""
    name = cfg.validation_split
    if name is None:
        return None
    if name != AUTO:
        _require_split(cfg, found, name, "data.validation_split")
        if name in (test, cfg.train_split):
            raise DataError(f"{cfg.source}: data.validation_split={name!r} is also the "
                            f"{'test' if name == test else 'training'} split")
        return name
    if "validation" in found and test != "validation" and _labeled(cfg, found["validation"]):
        return "validation"
    return None


def _column(cfg: DataConfig, ds: Any, split: str, column: str) -> None:
    if column not in ds.column_names:
        setting = "data.text_column" if column == cfg.text_column else "data.label_column"
        raise DataError(f"{cfg.source}: split {split!r} has no column {column!r} (columns: "
                        f"{', '.join(ds.column_names)}); set {setting}")


def _examples(cfg: DataConfig, found: dict[str, Any], split: str) -> list[Example]:
    """One split's rows as Examples: text a string, label a class index (ClassLabel ints, or names and
    numbers as in CSV files), ids from data.id_column or `split/row`."""
    ds = found[split]
    for column in (cfg.text_column, cfg.label_column, *([cfg.id_column] if cfg.id_column else [])):
        _column(cfg, ds, split, column)
    names = list(getattr(ds.features[cfg.label_column], "names", None) or [])
    if names and len(names) != len(cfg.labels):
        raise DataError(f"{cfg.source}: data.labels has {len(cfg.labels)} classes ({', '.join(cfg.labels)}); the "
                        f"dataset's column {cfg.label_column!r} has {len(names)} ({', '.join(names)}): leave "
                        "data.labels out to use the dataset's names, or give one per class")
    texts, labels = ds[cfg.text_column], ds[cfg.label_column]
    ids = ds[cfg.id_column] if cfg.id_column else None
    out = []
    for i, (text, value) in enumerate(zip(texts, labels, strict=True)):
        where = f"{cfg.source} split {split!r} row {i}"
        if not isinstance(text, str):
            raise DataError(f"{where}: column {cfg.text_column!r} is not text: {text!r}")
        if value in MISSING_LABELS:
            raise DataError(f"{where}: column {cfg.label_column!r} has no label ({value!r}) in a labelled split")
        label = parse_label(value, f"{where}: column {cfg.label_column!r}", cfg.labels)
        out.append(Example(id=str(ids[i]) if ids is not None else f"{split}/{i}", text=text, label=label))
    return out
