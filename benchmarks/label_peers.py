"""Peer rows for docs/RESULTS.md "How many labels do I need?": what a user would try instead of sentitune, on the
same labelled and test reviews as the README job's rows of configs/benches/labels.yaml (same budget, same seed;
each arm trains on all the labelled reviews, training + validation, as a user with N labels would):

- `tfidf-lr`: uni+bigram TF-IDF and a logistic regression (scikit-learn);
- `minilm-embeddings-lr`: the packaged all-MiniLM-L6-v2's sentence embeddings (mean pooling over real tokens,
  L2-normalised, as sentence-transformers computes them) and a logistic regression;
- `setfit` (`--setfit`, needs `pip install setfit`): SetFit's contrastive fine-tuning of the same MiniLM, then its
  logistic-regression head, with its default pairs and one epoch.

    .venv/bin/python benchmarks/label_peers.py                      # tfidf-lr and minilm-embeddings-lr
    .venv/bin/python benchmarks/label_peers.py --setfit --budgets 64 # SetFit too (slow on 2 cores)

Each result is written to runs/bench/labels/peers.json as it finishes (atomically; finished ones are skipped), and
benchmarks/labels_doc.py puts them beside the bench's learning curve.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from machine import cores_line
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from sentitune.atomic import write_json
from sentitune.benching import load_bench
from sentitune.data.records import Example
from sentitune.data.sources import load_splits
from sentitune.models.classifier import pool

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "configs" / "benches" / "labels.yaml"
PEERS = ROOT / "runs" / "bench" / "labels" / "peers.json"
ARMS = ("tfidf-lr", "minilm-embeddings-lr", "setfit")


def tfidf_lr(train: list[Example], test: list[Example]) -> np.ndarray:
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x = vectorizer.fit_transform([e.text for e in train])
    model = LogisticRegression(C=4.0, max_iter=2000).fit(x, [e.label for e in train])
    return model.predict(vectorizer.transform([e.text for e in test]))


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings, each review embedded once per process (the seeds share test reviews
    only by chance, the budgets share them all)."""

    def __init__(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from sentitune.models.registry import resolve

        source = resolve("minilm").source
        self.torch, self.tokenizer = torch, AutoTokenizer.from_pretrained(source)
        self.model = AutoModel.from_pretrained(source).eval()
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, examples: list[Example]) -> np.ndarray:
        todo = [e for e in examples if e.id not in self.cache]
        todo.sort(key=lambda e: len(e.text))
        with self.torch.inference_mode():
            for start in range(0, len(todo), 32):
                batch = todo[start:start + 32]
                enc = self.tokenizer([e.text for e in batch], truncation=True, max_length=256, padding=True,
                                     return_tensors="pt")
                states = self.model(**enc).last_hidden_state
                pooled = self.torch.nn.functional.normalize(pool(states, enc["attention_mask"], "mean"), dim=-1)
                for e, v in zip(batch, pooled.numpy(), strict=True):
                    self.cache[e.id] = v
        return np.stack([self.cache[e.id] for e in examples])


def embeddings_lr(embed: Embedder, train: list[Example], test: list[Example]) -> np.ndarray:
    model = LogisticRegression(C=1.0, max_iter=2000).fit(embed(train), [e.label for e in train])
    return model.predict(embed(test))


def setfit(train: list[Example], test: list[Example], seed: int) -> np.ndarray:
    from datasets import Dataset  # type: ignore[import-not-found]
    from setfit import SetFitModel, Trainer, TrainingArguments  # type: ignore[import-not-found]

    from sentitune.models.registry import resolve

    model = SetFitModel.from_pretrained(resolve("minilm").source)
    data = Dataset.from_dict({"text": [e.text for e in train], "label": [e.label for e in train]})
    with tempfile.TemporaryDirectory() as checkpoints:  # its Trainer's checkpoints (260 MB), not in the checkout
        args = TrainingArguments(output_dir=checkpoints, batch_size=16, num_epochs=1, seed=seed)
        Trainer(model=model, args=args, train_dataset=data).train()
    return np.asarray(model.predict([e.text for e in test]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="64,256,1024")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--setfit", action="store_true", help="run the SetFit arm too (pip install setfit)")
    args = parser.parse_args()
    rows = {r.name: r for r in load_bench(BENCH).rows}
    done: dict[str, Any] = json.loads(PEERS.read_text()) if PEERS.is_file() else {}
    arms = ARMS if args.setfit else ARMS[:2]
    embed: Embedder | None = None
    for budget in (int(b) for b in args.budgets.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            row = rows[f"labels{budget}-seed{seed}"]  # the README job's row: its labelled and test reviews
            splits = load_splits(row.config.data, row.config.train.seed)
            labelled, test = splits.train + splits.validation, splits.test
            truth = np.asarray([e.label for e in test])
            for arm in arms:
                key = f"{arm}-labels{budget}-seed{seed}"
                if key in done:
                    continue
                started = time.perf_counter()
                if arm == "tfidf-lr":
                    predicted = tfidf_lr(labelled, test)
                elif arm == "minilm-embeddings-lr":
                    embed = embed or Embedder()
                    predicted = embeddings_lr(embed, labelled, test)
                else:
                    predicted = setfit(labelled, test, seed)
                done[key] = {"arm": arm, "labels": len(labelled), "seed": seed, "n": len(test),
                             "accuracy": float((predicted == truth).mean()),
                             "seconds": round(time.perf_counter() - started, 1), "machine": cores_line()}
                write_json(PEERS, done)
                print(f"{key}: accuracy {done[key]['accuracy']:.4f} ({done[key]['seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
