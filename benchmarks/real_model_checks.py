"""The real-model checks of tests/test_real_models.py, with their numbers: accuracy, AUC, time.

Same data and settings as the tests (the shortest 100 + 100 IMDb training and 50 + 50 test
reviews, seed 42, 2 threads); prints a markdown table, and with --write puts it into docs/METHODS.md.

    .venv/bin/python benchmarks/real_model_checks.py [--imdb PATH] [--write]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from docs_block import write_block

from sentitune.config import load_config
from sentitune.data.imdb import read_imdb
from sentitune.data.records import Example
from sentitune.training import train

ROOT = Path(__file__).resolve().parents[1]
# The archive the tests read (tests/conftest.py).
ARCHIVE = Path(os.environ.get("SENTITUNE_TEST_IMDB", ROOT.parent / "shared" / "data" / "aclImdb_v1.tar.gz"))

COMMON = ["data.val_size=0", "train.batch_size=16", "train.baseline=false", "train.checkpoint_every=null",
          "train.threads=2"]
CHECKS = {  # keep in step with tests/test_real_models.py
    "MiniLM partial (freeze 4 of 6)": ["model.spec=minilm", "method.name=partial", "method.freeze_layers=4",
                                       "data.max_length=128", "train.epochs=1", "train.lr=0.0005"],
    "SmolLM2-135M LoRA (top 2 of 30)": ["model.spec=smollm2-135m", "method.name=lora", "method.lora.top_layers=2",
                                        "data.train_size=100", "data.max_length=48", "train.epochs=2",
                                        "train.lr=0.003"],
}
DOC = ROOT / "docs" / "METHODS.md"


def shortest(examples: list[Example], per_class: int) -> list[Example]:
    """The `per_class` shortest reviews of each label: the slice tests/conftest.py `take(..., shortest=True)` makes."""
    out: list[Example] = []
    for label in (0, 1):
        out += sorted((e for e in examples if e.label == label), key=lambda e: len(e.text))[:per_class]
    return out


def write_folder(root: Path, examples: list[Example]) -> Path:
    """The reviews in the official extracted layout (aclImdb/train/pos/123_9.txt), which read_imdb reads back."""
    for e in examples:
        file = root / "aclImdb" / f"{e.id}.txt"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(e.text.encode("utf-8"))
    return root / "aclImdb"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imdb", type=Path, default=ARCHIVE)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    full = read_imdb(args.imdb)
    rows = ["| check | train reviews | accuracy | ROC AUC | train s | wall s |", "|---|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_folder(Path(tmp) / "data", shortest(full["train"], 100) + shortest(full["test"], 50))
        for name, overrides in CHECKS.items():
            start = time.perf_counter()
            m = train(load_config(None, [f"data.path={folder}"] + COMMON + overrides), Path(tmp) / name)
            rows.append(f"| {name} | {m['data']['train']['n']} | {m['test']['accuracy']:.3f} | "
                        f"{m['test']['roc_auc']:.3f} | {m['train_seconds']:.0f} | {time.perf_counter() - start:.0f} |")
            print(rows[-1], flush=True)
    text = "\n".join(rows)
    print(text)
    if args.write:
        write_block(DOC, "real-models", f"`.venv/bin/python benchmarks/real_model_checks.py --write`\n\n{text}\n",
                    require=True)


if __name__ == "__main__":
    main()
