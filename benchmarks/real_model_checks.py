"""The real-model checks of tests/test_real_models.py, with their numbers: accuracy, AUC, time.

Same data and settings as the tests (the shortest 100 + 100 IMDb training and 50 + 50 test
reviews, seed 42, 2 threads); prints a markdown table, and with --write puts it into docs/METHODS.md.

    .venv/bin/python benchmarks/real_model_checks.py [--imdb PATH] [--write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import ARCHIVE, take, write_archive  # noqa: E402
from docs_block import write_block  # noqa: E402

from sentitune.config import load_config  # noqa: E402
from sentitune.data.imdb import read_imdb  # noqa: E402
from sentitune.train import train  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imdb", type=Path, default=ARCHIVE)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    full = read_imdb(args.imdb)
    rows = ["| check | train reviews | accuracy | ROC AUC | train s | wall s |", "|---|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        archive = write_archive(Path(tmp) / "aclImdb_v1.tar.gz", {"train": take(full["train"], 100, shortest=True),
                                                                  "test": take(full["test"], 50, shortest=True)})
        for name, overrides in CHECKS.items():
            start = time.perf_counter()
            m = train(load_config(None, [f"data.path={archive}"] + COMMON + overrides), Path(tmp) / name)
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
