"""Shared fixtures: the real IMDb archive from ../shared, and small stratified slices of it; the real
SemEval-2014 restaurant sentences (three classes, with targets) from ../shared too.

Slices are written in the official archive layout (tar.gz and extracted folder), so tests go
through the same readers as users. Review text stays in temporary folders, never in the repo.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tarfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from sentitune.data.imdb import read_imdb
from sentitune.data.records import Example

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = Path(os.environ.get("SENTITUNE_TEST_IMDB", ROOT.parent / "shared" / "data" / "aclImdb_v1.tar.gz"))
TARGETS = Path(os.environ.get("SENTITUNE_TEST_TARGETS", ROOT.parent / "shared" / "data" / "target-sentiment"))
THREE_CLASSES = ["negative", "neutral", "positive"]

# Code-path tests train models that may learn nothing in a few steps, and may keep one that answers one class
# for every validation review: that is refused by default (tests/test_small_data.py), allowed here.
LEARNS_NOTHING_OK = "train.refuse_one_class=false"


@pytest.fixture(scope="session")
def target_data() -> Path:
    """The three-line `$T$` sets (acl-14 Twitter, SemEval-2014 restaurants and laptops) from ../shared."""
    if not (TARGETS / "semeval14" / "Restaurants_Train.xml.seg").exists():
        pytest.fail(f"{TARGETS}: the target-sentiment sets tests read are missing (set SENTITUNE_TEST_TARGETS)")
    return TARGETS


def write_target_lines(path: Path, examples: list[Example]) -> Path:
    """Examples back in the three-line format (the target replaced by $T$ at its span)."""
    polarity = {0: "-1", 1: "0", 2: "1"}
    lines = []
    for e in examples:
        assert e.span is not None
        lines += [e.text[: e.span[0]] + "$T$" + e.text[e.span[1]:], e.target or "", polarity[e.label]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def imdb_archive() -> Path:
    if not ARCHIVE.exists():
        pytest.fail(f"{ARCHIVE}: the IMDb archive tests read is missing (set SENTITUNE_TEST_IMDB)")
    return ARCHIVE


@pytest.fixture(scope="session")
def imdb_full(imdb_archive: Path) -> dict[str, list[Example]]:
    """All 50,000 labelled reviews (read once per session, ~6 s)."""
    return read_imdb(imdb_archive)


def take(examples: list[Example], per_class: int, shortest: bool = False) -> list[Example]:
    """A deterministic, balanced slice: `per_class` reviews of each label (optionally the shortest)."""
    out = []
    for label in (0, 1):
        pool = [e for e in examples if e.label == label]
        if shortest:
            pool = sorted(pool, key=lambda e: len(e.text))
        out += pool[:per_class]
    return out


def write_archive(path: Path, splits: dict[str, list[Example]], extra: dict[str, bytes] | None = None) -> Path:
    """Write examples as an official-layout aclImdb tar.gz (plus optional extra members)."""
    with tarfile.open(path, "w:gz") as tar:
        members = {f"aclImdb/{e.id}.txt": e.text.encode() for exs in splits.values() for e in exs}
        members.update(extra or {})
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_folder(root: Path, splits: dict[str, list[Example]]) -> Path:
    for exs in splits.values():
        for e in exs:
            f = root / "aclImdb" / f"{e.id}.txt"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(e.text, encoding="utf-8")
    return root / "aclImdb"


@pytest.fixture(scope="session")
def imdb_slice(imdb_full: dict[str, list[Example]]) -> dict[str, list[Example]]:
    """60 train + 30 test reviews per class, the shortest ones (fast to tokenize and train on)."""
    return {"train": take(imdb_full["train"], 60, shortest=True), "test": take(imdb_full["test"], 30, shortest=True)}


@pytest.fixture(scope="session")
def imdb_slice_archive(tmp_path_factory: pytest.TempPathFactory, imdb_slice: dict[str, list[Example]]) -> Path:
    return write_archive(tmp_path_factory.mktemp("imdb") / "aclImdb_v1.tar.gz", imdb_slice)


def chromium() -> str:
    """The headless browser (Debian's chromium; tests/test_report.py, tests/test_serve.py); CI must have it
    (scripts/test.sh installs it), elsewhere its absence skips."""
    found = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: scripts/test.sh installs it with apt-get (as root)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


# ---------------------------------------------------------------------------- one real trained run

TRAIN_SIZE, VAL_SIZE, EVAL_SIZE, MAX_LENGTH, BATCH = 48, 16, 20, 64, 16


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """`sentitune ARGS` in-process: (exit code, stdout, stderr). argparse's exits count; an uncaught
    exception is exit 1 with its traceback on stderr, as the real command would show it."""
    from sentitune.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except Exception:
            traceback.print_exc()
            code = 1
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, err: str, expect: list[str]) -> str:
    """Exit code 2 and exactly one stderr line, `sentitune...error: ...`, that contains every `expect`."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert code == 2, f"exit code {code}, stderr: {err!r}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
    line = lines[0]
    assert line.startswith("sentitune") and "error:" in line, line
    for part in expect:
        assert part in line, f"{part!r} not in {line!r}"
    return line


def train_args(archive: Path, out: Path) -> list[str]:
    return ["train", "--model", "minilm", "--method", "lora", "--data", str(archive),
            "--train-size", str(TRAIN_SIZE), "--val-size", str(VAL_SIZE), "--eval-size", str(EVAL_SIZE),
            "--max-length", str(MAX_LENGTH), "--batch-size", str(BATCH), "--epochs", "1", "--lr", "0.002",
            "--seed", "7", "--set", "name=cli-test", "--set", "method.lora.target_modules=[query,value]",
            "--set", LEARNS_NOTHING_OK, "--out", str(out), "--no-progress"]


def training_precision() -> str:
    """What train.precision=auto picks here: bf16 on a CPU with bf16 instructions (or $SENTITUNE_PRECISION)."""
    import torch

    from sentitune.precision import name, pick_precision

    return name(pick_precision("auto", torch.device("cpu")))


@pytest.fixture(scope="session")
def minilm_lora_run(tmp_path_factory: pytest.TempPathFactory, imdb_slice_archive: Path) -> tuple[Path, str]:
    """A few LoRA steps of the packaged MiniLM on 48 short IMDb reviews, through the CLI: (run dir, stdout)."""
    run = tmp_path_factory.mktemp("runs") / "minilm-lora"
    code, out, err = run_cli(train_args(imdb_slice_archive, run))
    assert code == 0, err
    return run, out


# ------------------------------------------------------------------------------------------ a tiny bench

BENCH_COMMON = ["model.spec=gpt2-tiny-random", "data.max_length=32", "data.train_size=16", "data.eval_size=16",
                "data.val_size=8", "train.epochs=1", "train.baseline=false", "method.tfidf.min_df=1",
                LEARNS_NOTHING_OK]
BENCH_FINISHED = ("lora-seed1", "lora-seed2", "tfidf", "zero-shot")


def write_bench(folder: Path, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def bench_run(tmp_path_factory: pytest.TempPathFactory,
              imdb_slice_archive: Path) -> Iterator[tuple[Path, Path, int, str]]:
    """A tiny bench through the CLI, once per session (tests/test_bench.py, tests/test_statistics.py,
    tests/test_report.py): LoRA on gpt2-tiny-random with two seeds, a TF-IDF reference with a published number,
    zero-shot, a failing row."""
    folder = tmp_path_factory.mktemp("bench")
    path = write_bench(folder, {
        "name": "tiny", "set": [*BENCH_COMMON, f"data.path={imdb_slice_archive}"],
        "matrix": {"method.name": ["lora"], "train.seed": [1, 2]},
        "rows": [{"name": "tfidf", "set": ["method.name=tfidf", "train.seed=1"],  # seed 1's test slice
                  "published": {"accuracy": 0.9122, "source": "Wang & Manning 2012, NBSVM-bi"}},
                 {"name": "zero-shot", "set": ["method.name=zero-shot", "train.seed=1",
                                               "zero_shot.calibration_size=4"]},
                 {"name": "broken", "set": ["model.spec=no-such-model-xyz"]}],
    })
    out = folder / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        code, stdout, err = run_cli(["bench", str(path), "--out", str(out), "--no-progress"])
    yield path, out, code, stdout + err


def bench_predictions(path: Path) -> dict[str, tuple[int, int]]:
    """A run's predictions.csv as id -> (label, pred): what McNemar and F1 are computed from."""
    with path.open(newline="") as f:
        return {r["id"]: (int(r["label"]), int(r["pred"])) for r in csv.DictReader(f)}


# --------------------------------------------------------------- three classes: target-dependent sentiment


@pytest.fixture(scope="session")
def restaurants(target_data: Path) -> tuple[Path, Path]:
    """SemEval-2014 restaurants, three-line `$T$` files (train, test): sentence, aspect, -1/0/1."""
    folder = target_data / "semeval14"
    return folder / "Restaurants_Train.xml.seg", folder / "Restaurants_Test_Gold.xml.seg"


def restaurant_config(folder: Path, restaurants: tuple[Path, Path], name: str = "restaurants") -> Path:
    """An experiment YAML for three classes, as a user writes one: data.labels and a .seg source."""
    train, test = restaurants
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "data": {
        "source": str(train), "test_path": str(test), "labels": THREE_CLASSES, "max_length": 64}}), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def nclass_bench_run(tmp_path_factory: pytest.TempPathFactory,
                     restaurants: tuple[Path, Path]) -> Iterator[tuple[Path, Path, int, str]]:
    """A three-class bench through the CLI, once per session, on 150 real restaurant sentences with their
    aspects (90 to test): the TF-IDF reference with two seeds, its nb variant, a MiniLM probe on cached
    features (the one trained transformer row: seconds) and zero-shot prompting of the tiny random GPT-2."""
    folder = tmp_path_factory.mktemp("bench3")
    base = restaurant_config(folder, restaurants)
    path = write_bench(folder, {
        "name": "three", "base": base.name,
        "set": ["data.train_size=150", "data.eval_size=90", "data.val_size=15", "data.max_length=48",
                "train.baseline=false", "method.tfidf.min_df=1", LEARNS_NOTHING_OK],
        "matrix": {"method.name": ["tfidf"], "train.seed": [1, 2]},
        "rows": [{"name": "tfidf-nb", "set": ["method.name=tfidf", "method.tfidf.variant=nb", "train.seed=1"]},
                 {"name": "probe", "set": ["method.name=probe", "model.spec=minilm", "train.seed=1",
                                           "train.feature_cache=true", f"train.feature_cache_dir={folder / 'cache'}",
                                           "train.epochs=4", "train.lr=0.005"]},
                 {"name": "zero-shot", "set": ["method.name=zero-shot", "model.spec=gpt2-tiny-random", "train.seed=1",
                                               "zero_shot.template=target-sentiment", "zero_shot.decision=contextual",
                                               "zero_shot.calibration_size=8"]}],
    })
    out = folder / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        code, stdout, err = run_cli(["bench", str(path), "--out", str(out), "--no-progress"])
    yield path, out, code, stdout + err


def interrupt_after_steps(monkeypatch: pytest.MonkeyPatch, steps: int) -> Callable[..., object]:
    """Ctrl-C on the optimizer step after `steps` steps (with checkpoint_every=1: after `steps` checkpoints);
    returns the real AdamW.step, to put back before the run is resumed."""
    import torch

    step, calls = torch.optim.AdamW.step, {"n": 0}

    def interrupted_step(self: torch.optim.Optimizer, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == steps + 1:
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", interrupted_step)
    return step


# ------------------------------------------------------------------ a PostgreSQL server for many workers


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL server (tests/pgserver.py) for the session: its base URL. Where Debian's server
    is not installed the tests that need it are skipped, except with CI=true (scripts/test.sh installs it)."""
    import pgserver

    if pgserver.binaries() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed: scripts/test.sh installs it with apt-get (as root)")
        pytest.skip("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    with pgserver.server() as (base, _):
        yield base


@pytest.fixture
def postgres_url(postgres_server: str, request: pytest.FixtureRequest) -> str:
    """A fresh database on the session's server, named after the test: its postgresql+psycopg:// URL."""
    import pgserver

    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    return pgserver.create_database(postgres_server, name)


# ------------------------------------------------------------- hostile inputs: synthetic data, tiny runs
# What the fault-injection and hostile-pass cases (docs/RELIABILITY.md) share across the module files that
# hold them: synthetic reviews and tables (their content does not matter, their shape does) and tiny runs of
# the packaged `gpt2-tiny-random` (real GPT-2 tokenizer, random weights) or TF-IDF, trained in seconds.

TINY_LORA = ["--model", "gpt2-tiny-random", "--method", "lora", "--max-length", "32", "--no-progress",
             "--set", LEARNS_NOTHING_OK]
TINY_ONE_EPOCH = ["--model", "gpt2-tiny-random", "--max-length", "32", "--epochs", "1", "--no-progress",
                  "--set", LEARNS_NOTHING_OK]
# The tiny settings `T` of the second hostile pass: 48 training reviews, 32 test reviews, 64 tokens, no baseline,
# 16 validation reviews.
TINY_SETTINGS = ["--train-size", "48", "--eval-size", "32", "--max-length", "64", "--no-progress",
                 "--set", "train.baseline=false", "--set", "data.val_size=16", "--set", LEARNS_NOTHING_OK]
FORMULA = "=cmd|' /C calc'!A0"
ID_PREFIXES = "=+-@"  # every review id of `runs` starts with a character spreadsheets treat as a formula


def review(i: int, label: int) -> str:
    """Synthetic review text: the readers and checks under test do not care what it says."""
    return f"Review {i}: {'a fine, moving film' if label else 'a dull, clumsy film'} <br /><br />with ünïcode ✓."


def archive_members(per_class: int = 4) -> dict[str, bytes]:
    """Official-layout members: aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt."""
    members = {}
    for split in ("train", "test"):
        for label, folder, rating in ((1, "pos", 8), (0, "neg", 2)):
            for i in range(per_class):
                members[f"aclImdb/{split}/{folder}/{i}_{rating}.txt"] = review(i, label).encode()
    return members


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def class_rows(n: int, labels: list[str]) -> list[list[object]]:
    """n rows per class, each class with its own words, so an n-gram model separates them."""
    words = ["dull clumsy boring", "plain ordinary average", "moving superb wonderful", "odd strange weird"]
    return [[f"review {i} {words[k]} film {i % 7}", label] for i in range(n) for k, label in enumerate(labels)]


def tfidf_argv(source: Path, out: Path, labels: list[str]) -> list[str]:
    return ["train", "--method", "tfidf", "--source", str(source), "--out", str(out), "--no-progress",
            "--set", f"data.labels={json.dumps(labels)}", "--set", "method.tfidf.min_df=1", "--set", "data.val_size=0"]


@pytest.fixture(scope="module")
def formula_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-class tfidf run whose class names hold a formula and a `|`: predicts in milliseconds."""
    folder = tmp_path_factory.mktemp("formula")
    source = write_csv(folder / "three.csv", ["text", "label"], class_rows(10, ["0", "1", "2"]))
    run = folder / "run"
    code, _, err = run_cli(tfidf_argv(source, run, ["neg|ative", "<b>neutral</b>", FORMULA]))
    assert code == 0, err
    return run


@pytest.fixture(scope="module")
def hostile_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-class tfidf bench whose class names and published source hold `|`, HTML and a formula."""
    folder = tmp_path_factory.mktemp("hostile-bench")
    source = write_csv(folder / "three.csv", ["text", "label"], class_rows(10, ["0", "1", "2"]))
    bench = folder / "bench.yaml"
    bench.write_text(yaml.safe_dump({
        "name": "hostile",
        "set": [f"data.source={source}", "method.name=tfidf", "method.tfidf.min_df=1", "data.val_size=0",
                f"data.labels={json.dumps(['neg|ative', '<script>alert(1)</script>', FORMULA])}"],
        "rows": [{"name": "tfidf",
                  "published": {"accuracy": 0.5, "source": f"{FORMULA} <img src=x onerror=alert(1)>"}}],
    }))
    out = folder / "out"
    code, _, err = run_cli(["bench", str(bench), "--out", str(out), "--no-progress"])
    assert code == 0, err
    return out


def write_formula_id_reviews(path: Path, n: int = 40) -> Path:
    """Synthetic labelled reviews whose ids (user-given, through data.id_column) all look like formulas."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label"])
        for i in range(n):
            text = f"Review {i}: {'a fine, moving' if i % 2 else 'a dull, clumsy'} film."
            w.writerow([f"{ID_PREFIXES[i % 4]}{i}", text, i % 2])
    return path


def formula_id_train_argv(source: Path, out: Path, method: str = "lora") -> list[str]:
    return ["train", *TINY_ONE_EPOCH, "--method", method, "--source", str(source), "--set", "data.id_column=id",
            "--out", str(out)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A LoRA run (weights "adapter") and a full fine-tune (weights "backbone") on 40 reviews whose ids look like
    formulas (`write_formula_id_reviews`), trained once per module."""
    workdir = tmp_path_factory.mktemp("hardening")
    reviews = write_formula_id_reviews(workdir / "reviews.csv")
    made = {}
    for method in ("lora", "full"):
        code, _, err = run_cli(formula_id_train_argv(reviews, workdir / f"run-{method}", method))
        assert code == 0, err
        made[method] = workdir / f"run-{method}"
    return made


def copy_run(run: Path, dest: Path) -> Path:
    return Path(shutil.copytree(run, dest))


def write_labelled_reviews(path: Path, n: int = 24) -> Path:
    """Synthetic labelled reviews, a CSV of text,label."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(n):
            w.writerow([f"Review {i}: {'a fine, moving' if i % 2 else 'a dull, clumsy'} film.", i % 2])
    return path


@pytest.fixture(scope="module")
def full_gpt2_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A full fine-tune of gpt2-tiny-random on 24 synthetic reviews (offline: the packaged model; its hf export is
    exact), trained once per module; HF_HUB_OFFLINE stays set while the module uses it."""
    workdir = tmp_path_factory.mktemp("hardening2")
    reviews = write_labelled_reviews(workdir / "reviews.csv")
    out = workdir / "run-full"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        code, _, err = run_cli(["train", *TINY_ONE_EPOCH, "--method", "full", "--source", str(reviews),
                                "--set", "train.baseline=false", "--out", str(out)])
        assert code == 0, err
        yield out


def pytest_collection_finish(session: pytest.Session) -> None:
    """A selected test whose module has slow set-up to do in the background (tests/test_install.py: a fresh venv,
    mostly pip unpacking) starts it now, so it overlaps the tests that run before it."""
    for module in {item.module for item in session.items if isinstance(item, pytest.Function)}:
        start = getattr(module, "start_in_background", None)
        if callable(start):
            start()
