"""Score an `export --format onnx` folder with no torch and no sentitune: numpy, onnxruntime and tokenizers (the
tokenizer library under transformers). Every ONNX export of a run on whole reviews carries this file as
`sentitune_scorer.py`, so the folder alone answers as the run did:

    python sentitune_scorer.py FOLDER "A wonderful film." "Dull."      # one JSON line per text
    python sentitune_scorer.py FOLDER < reviews.txt                      # one review per line
    from sentitune_scorer import Scorer; Scorer(FOLDER).probabilities(texts)   # [n, classes] numpy

What it does, as sentitune does it (sentitune.json's `preprocessing` and `ensemble` say which steps apply):
1. the HTML clean-up: `<br />` to a space, runs of spaces squeezed, ends stripped (data/text.py clean_text);
2. the tokens of a long review cut to max_length: the first ones (head), the last (tail), or both ends
   (head+tail: `head_tokens`, default a quarter, from the start and the rest from the end), the tokenizer's
   special tokens kept at both ends (data/batching.py encode);
3. the graph's class probabilities (model.onnx: input_ids and attention_mask, padded on the right);
4. for an ensemble, the n-gram model in ngram/ (vocabulary JSON and arrays: TF-IDF or NBSVM features of word
   n-grams, a logistic regression) and the weights that add the two models' log-probabilities (ensemble.py).

Why this file and not a graph: head+tail and an n-gram vocabulary are plain list and dict work, which a short
readable function does exactly; this module imports nothing from sentitune, and the export is written only after
its answers matched sentitune's on the probe reviews.
"""

from __future__ import annotations

import json
import math
import re
import sys
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

META = "sentitune.json"
EPS = 1e-7  # ensemble.py: probabilities clipped before the log
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SPACES = re.compile(r"[ \t]{2,}")


# clean_text and truncate_ids are copies of sentitune.data.text's (this file imports nothing of sentitune's);
# tests/test_properties.py holds each pair equal on generated inputs.
def clean_text(text: str) -> str:
    return _SPACES.sub(" ", _BR.sub(" ", text)).strip()


def truncate_ids(ids: list[int], budget: int, side: str = "head", head_tokens: int | None = None) -> list[int]:
    """At most `budget` ids: the first (head), the last (tail), or head_tokens (default a quarter) + the rest."""
    if budget <= 0:
        return []
    if len(ids) <= budget:
        return list(ids)
    if side == "head":
        return list(ids[:budget])
    if side == "tail":
        return list(ids[len(ids) - budget:])
    head = budget // 4 if head_tokens is None else min(head_tokens, budget)
    return list(ids[:head]) + list(ids[len(ids) - (budget - head):])


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _strip_accents(text: str) -> str:
    """scikit-learn's strip_accents="unicode"."""
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


class NgramModel:
    """A saved sentitune n-gram model (tfidf.json + tfidf.npz): scikit-learn's TfidfVectorizer.transform (lowercase,
    accents stripped, the token pattern, word 1..n-grams; 0/1 presence, or sublinear TF x idf, l2-normed), the NB
    ratios and the logistic regression(s), in numpy."""

    def __init__(self, folder: Path) -> None:
        saved = json.loads((folder / "tfidf.json").read_text(encoding="utf-8"))
        if "target_vocabulary" in saved:
            raise ValueError(f"{folder}: a target-dependent n-gram model; this scorer reads whole texts")
        settings = saved["settings"]
        self.ngram_max, self.binary = int(settings["ngram_max"]), bool(settings["binary"])
        self.pattern = re.compile(settings["token_pattern"])
        self.vocabulary: dict[str, int] = saved["vocabulary"]
        self.classes = np.asarray(saved["classes"], dtype=int)
        self.num_classes = len(saved["labels"])
        with np.load(folder / "tfidf.npz", allow_pickle=False) as arrays:
            self.coef = arrays["coef"].astype(np.float64)
            self.intercept = arrays["intercept"].astype(np.float64)
            self.idf = arrays["idf"].astype(np.float64) if "idf" in arrays.files else None
            self.ratios = arrays["ratios"].astype(np.float64) if "ratios" in arrays.files else None

    def features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(column indices, values) of one text's feature row."""
        tokens = self.pattern.findall(_strip_accents(text.lower()))
        counts: dict[int, int] = {}
        for n in range(1, self.ngram_max + 1):
            for i in range(len(tokens) - n + 1):
                column = self.vocabulary.get(" ".join(tokens[i:i + n]))
                if column is not None:
                    counts[column] = counts.get(column, 0) + 1
        index = np.fromiter(sorted(counts), dtype=np.int64, count=len(counts))
        if self.binary:
            return index, np.ones(len(index))
        values = 1.0 + np.log(np.array([counts[int(j)] for j in index], dtype=np.float64))
        if self.idf is not None:
            values *= self.idf[index]
        norm = math.sqrt(float(values @ values))
        return index, values / norm if norm > 0 else values

    def probabilities(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.num_classes))
        for row, text in enumerate(texts):
            index, values = self.features(text)
            if self.ratios is not None and self.ratios.ndim == 2:  # one-vs-rest NB, one regression per class
                z = np.array([values @ (r[index] * w[index]) + b
                              for r, w, b in zip(self.ratios, self.coef, self.intercept, strict=True)])
                present = 1.0 / (1.0 + np.exp(-z))
                present /= present.sum()
            else:
                weighted = values * self.ratios[index] if self.ratios is not None else values
                z = self.coef[:, index] @ weighted + self.intercept
                present = (np.array([1.0 / (1.0 + np.exp(z[0])), 1.0 / (1.0 + np.exp(-z[0]))]) if len(z) == 1
                           else _softmax(z[None, :])[0])
            out[row, self.classes] = present
        return out


class Scorer:
    """An exported folder, loaded once: `probabilities(texts)` -> [n, classes] as sentitune's predict gives them."""

    def __init__(self, folder: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.meta: dict[str, Any] = json.loads((self.folder / META).read_text(encoding="utf-8"))
        self.labels: list[str] = self.meta["labels"]
        pre = self.meta.get("preprocessing") or {}
        self.max_length, self.side = int(pre["max_length"]), pre.get("truncation", "head")
        self.head_tokens, self.clean_html = pre.get("head_tokens"), bool(pre.get("clean_html", True))
        self.pad_id = int(self.meta.get("pad_token_id") or 0)
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.no_truncation()  # the cut is step 2's, on the review's own tokens
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.folder / self.meta.get("graph", "model.onnx")), options,
                                            providers=["CPUExecutionProvider"])
        ensemble = self.meta.get("ensemble")
        self.weights = ensemble["weights"] if ensemble else None
        self.ngram = NgramModel(self.folder / ensemble["ngram"]) if ensemble else None

    def ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids: specials at both ends kept, the review's own tokens cut to fit max_length."""
        out = []
        for enc in self.tokenizer.encode_batch(texts, add_special_tokens=True):
            ids, special = enc.ids, enc.special_tokens_mask
            lead = 0
            while lead < len(ids) and special[lead]:
                lead += 1
            trail = 0
            while trail < len(ids) - lead and special[len(ids) - 1 - trail]:
                trail += 1
            body = truncate_ids(ids[lead:len(ids) - trail], self.max_length - lead - trail, self.side,
                                self.head_tokens)
            out.append(ids[:lead] + body + ids[len(ids) - trail:])
        return out

    def transformer(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """The graph's [n, classes] probabilities, in batches of similar length (padded on the right)."""
        ids = self.ids(texts)
        out = np.zeros((len(texts), len(self.labels)))
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(len(ids[i]) for i in rows)
            input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                input_ids[r, :len(ids[i])], mask[r, :len(ids[i])] = ids[i], 1
            probs = self.session.run(["probabilities"], {"input_ids": input_ids, "attention_mask": mask})[0]
            out[rows] = probs.astype(np.float64)
        return out

    def probabilities(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        texts = [clean_text(t) if self.clean_html else t for t in texts]
        probs = self.transformer(texts, batch_size)
        if self.ngram is None or self.weights is None:
            return probs
        z = sum(self.weights[name] * _log_probs(p) for name, p in (("transformer", probs),
                                                                    ("ngram", self.ngram.probabilities(texts))))
        return _softmax(z)


def _log_probs(probs: np.ndarray) -> np.ndarray:
    probs = np.clip(probs, EPS, 1 - EPS)
    return np.log(probs / probs.sum(axis=1, keepdims=True))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    scorer = Scorer(argv[0])
    texts = argv[1:] or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for p in scorer.probabilities(texts):
        print(json.dumps({"label": scorer.labels[int(p.argmax())],
                          "probs": {name: float(v) for name, v in zip(scorer.labels, p, strict=True)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
