"""docs/RESULTS.md's section on the published experiments: each one's setup beside its offline stand-in's,
the stand-in's measured accuracy at a stated size, and the full-size command with an estimate of its CPU time.

benchmarks/results_doc.py calls `published_section`; nothing here runs a model. Setups are read from the
bench files (configs/benches/published.yaml, offline.yaml, offline-results.yaml, published-measured.yaml),
numbers from the run directories; nothing is typed in.

The estimate is arithmetic on measured rates, not a run: FLOPs per token for the method (2N forward,
+2N for activation gradients, +2N for weight gradients of the layers that train; N = non-embedding
parameters) times the tokens the row would see (a seeded sample of 1,000 training reviews tokenized with
the row's tokenizer, truncated at its max_length), divided by the FLOP rate this machine reached in the
measured rows (training and inference separately; SmolLM2 inference from its zero-shot row). Attention's
quadratic cost, a frozen prefix read from the feature cache and a bigger model's better matmul efficiency
are ignored: read it as +-2x. The doc also applies the estimator to the measured rows, next to their
measured times.
"""

from __future__ import annotations

import json
import statistics
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from sentitune.benching import BenchRow
from sentitune.config import ExperimentConfig
from sentitune.markdown import cell, duration

IMDB_TRAIN, IMDB_TEST = 25_000, 25_000

# published row -> (its full-size offline counterpart in configs/benches/offline.yaml, the measured row here:
# a row of the matrix, configs/benches/offline-results.yaml, or of configs/benches/published-measured.yaml)
COUNTERPARTS: dict[str, tuple[str, str]] = {
    "gpt2-zero-shot": ("smollm2-zero-shot", "smollm2-zero-shot"),
    "gpt2-partial": ("smollm2-partial", "smollm2-partial-1k"),
    "gpt2-lora-last2": ("smollm2-lora-last2", "smollm2-lora-last2-1k"),
    "bert-partial": ("minilm-partial", "minilm-partial-freeze4"),
    "bert-lora": ("minilm-lora", "minilm-lora-r8"),
    "bert-lora-5k": ("minilm-lora-5k", "minilm-lora-5k"),
    "bert-cased-lora": ("mpnet-lora", "mpnet-lora-500"),
    "distilbert-two-phase": ("minilm-two-phase", "minilm-two-phase"),
    "bert-lora-r4": ("minilm-lora-r4", "minilm-lora-r4"),
    "bert-lora-r16": ("minilm-lora-r16", "minilm-lora-r16"),
    "bert-lora-r32": ("minilm-lora-r32", "minilm-lora-r32"),
    "bert-full": ("minilm-full", "minilm-full"),
    "distilbert-full": ("minilm-full", "minilm-full"),
    "tfidf-nb": ("tfidf-nb", "tfidf-nb-train25k"),
    "tfidf-lr": ("tfidf-lr", "tfidf-lr-train25k"),
}

# ------------------------------------------------------------------------------------------ estimates


@cache
def _sample_texts() -> list[str]:
    from sentitune.data.imdb import locate_imdb, read_imdb
    from sentitune.data.text import clean_text

    train = read_imdb(locate_imdb(None), ("train",))["train"]
    picks = np.random.default_rng(0).choice(len(train), size=1000, replace=False)
    return [clean_text(train[i].text) for i in picks]


@cache
def mean_tokens(spec: str, max_length: int) -> float:
    """Mean tokens per review after truncation at max_length, on 1,000 seeded training reviews."""
    from transformers import AutoTokenizer

    from sentitune.models.registry import resolve

    tok = AutoTokenizer.from_pretrained(resolve(spec).source)
    lengths = [len(ids) for ids in tok(_sample_texts(), add_special_tokens=True)["input_ids"]]
    return float(np.mean(np.minimum(lengths, max_length)))


@cache
def model_shape(spec: str) -> tuple[int, int]:
    """(non-embedding parameters, blocks), built on the meta device: no memory, no weights read."""
    import torch
    from transformers import AutoConfig, AutoModel

    from sentitune.models.blocks import num_blocks
    from sentitune.models.registry import resolve

    with torch.device("meta"):
        model = AutoModel.from_config(AutoConfig.from_pretrained(resolve(spec).source))
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embed" in n)
    return sum(p.numel() for p in model.parameters()) - embedding, num_blocks(model)


def train_flops_per_token(cfg: ExperimentConfig, method: str, n: int, blocks: int) -> float:
    """Per trained token: forward 2N, activation gradients down to the lowest layer that trains, weight
    gradients for the layers that train (LoRA: none for the frozen base weights)."""
    if method == "probe":
        return 2 * n
    if method == "full":
        return 6 * n
    if method == "partial":
        return 2 * n + 4 * n * (blocks - cfg.method.freeze_layers) / blocks
    top = cfg.method.lora.top_layers or blocks  # lora
    return 2 * n + 2 * n * top / blocks


def sizes(cfg: ExperimentConfig) -> tuple[int, int, int]:
    """(train, validation, test) review counts of a row."""
    pool = IMDB_TRAIN
    val = int(cfg.data.val_size) if cfg.data.val_size >= 1 else round(cfg.data.val_size * pool)
    train = cfg.data.train_size or pool - val
    return train, val, cfg.data.eval_size or IMDB_TEST


def estimate(cfg: ExperimentConfig, rates: dict[str, float]) -> float | None:
    """Estimated CPU seconds of a row on this machine (None for tfidf: measured in seconds anyway)."""
    if cfg.method.name == "tfidf":
        return None
    spec = cfg.model.spec
    n, blocks = model_shape(spec)
    decoder = spec.startswith("smollm2")
    infer = rates["decoder_inference" if decoder else "inference"]
    train_rate = rates["train"] * (rates["decoder_inference"] / rates["inference"] if decoder else 1.0)
    train, val, test = sizes(cfg)
    if cfg.method.name == "zero-shot":
        tokens = mean_tokens(spec, cfg.zero_shot.review_tokens) + 10  # the template around the review
        return 2 * n * tokens * (test + 2 * cfg.zero_shot.calibration_size) / infer
    tokens = mean_tokens(spec, cfg.data.max_length)
    seconds = 0.0
    for phase in cfg.phases():
        seconds += phase.epochs * train * tokens * train_flops_per_token(cfg, phase.method, n, blocks) / train_rate
        seconds += max(1, round(phase.epochs)) * val * tokens * 2 * n / infer
    return seconds + test * tokens * 2 * n / infer


def measured_rates(rows: list[dict[str, Any]], bench: dict[str, BenchRow], out: Path) -> dict[str, float]:
    """FLOP/s this machine reached: training (LoRA and full rows), inference (their test passes), and
    SmolLM2's inference (its zero-shot row's tokens/s)."""
    train, infer = [], []
    for r in rows:
        cfg = bench[r["name"]].config
        if cfg.method.name not in ("lora", "full") or not r["train_tokens_per_second"]:
            continue
        n, blocks = model_shape(cfg.model.spec)
        train.append(r["train_tokens_per_second"] * train_flops_per_token(cfg, cfg.method.name, n, blocks))
        infer.append(r["n"] * mean_tokens(cfg.model.spec, cfg.data.max_length) * 2 * n / r["test_seconds"])
    rates = {"train": statistics.median(train), "inference": statistics.median(infer)}
    zero = next((r for r in rows if bench[r["name"]].config.method.name == "zero-shot"), None)
    metrics = json.loads((out / zero["name"] / "metrics.json").read_text()) if zero else {}
    if metrics.get("tokens_per_second"):
        rates["decoder_inference"] = metrics["tokens_per_second"] * 2 * model_shape("smollm2-135m")[0]
    else:
        rates["decoder_inference"] = rates["inference"]
    return rates


# ------------------------------------------------------------------------------------------ setups


def _lr(value: float) -> str:
    return f"{value:g}"


def setup(cfg: ExperimentConfig) -> dict[str, str]:
    """A row's setup as the columns a reader compares: model, what trains, head, schedule, data."""
    m = cfg.method
    if m.name == "tfidf":
        what = f"TF-IDF {m.tfidf.variant}, n-grams 1-{m.tfidf.ngram_max}"
    elif m.name == "zero-shot":
        z = cfg.zero_shot
        what = f"zero-shot, template `{z.template}`, review cut to its {z.truncation} {z.review_tokens} tokens"
    elif m.name == "partial":
        what = f"partial: embeddings + blocks 1-{m.freeze_layers} frozen"
    elif m.name == "lora":
        where = f"top {m.lora.top_layers} blocks" if m.lora.top_layers else "every block"
        what = (f"LoRA r {m.lora.r}, alpha {m.lora.alpha}, dropout {m.lora.dropout:g} on "
                f"{'/'.join(m.lora.target_modules or ['default'])}, {where}")
    elif m.name == "two-phase":
        what = "two-phase: " + ", then ".join(f"{p.method} {p.epochs:g} ep at lr {_lr(p.lr or cfg.train.lr)}"
                                              for p in m.phases)
    else:
        what = m.name
    train, val, test = sizes(cfg)
    head = "" if m.name in ("tfidf", "zero-shot") else (
        f"{'1 logit + BCE' if cfg.model.head == 'sigmoid' else '2 logits + CE'}, {cfg.model.pooling} pooling")
    schedule = "" if m.name in ("tfidf", "zero-shot", "two-phase") else (
        f"lr {_lr(cfg.train.lr)}, {cfg.train.epochs:g} ep, batch {cfg.train.batch_size}")
    tokens = "" if m.name in ("tfidf", "zero-shot") else f", {cfg.data.max_length} tokens ({cfg.data.truncation})"
    data = (f"{train:,} / {val:,} / {test:,}{tokens}" if m.name != "zero-shot"
            else f"none / {cfg.zero_shot.calibration_size:,} for calibration / {test:,}")
    return {"model": "" if m.name == "tfidf" else cfg.model.spec, "method": what, "head": head,
            "schedule": schedule, "data": data}


def _differences(mine: dict[str, str], theirs: dict[str, str]) -> str:
    """What the stand-in's setup changes from the published one ('as published' when nothing)."""
    changed = [f"{k}: {v}" for k, v in mine.items() if v != theirs.get(k) and v]
    return "; ".join(changed) or "as published"


# ------------------------------------------------------------------------------------------ the section


def published_section(published: list[BenchRow], offline: dict[str, BenchRow], measured: dict[str, BenchRow],
                      rows: dict[str, dict[str, Any]], wall: dict[str, float | None],
                      rates: dict[str, float], commands: dict[str, str]) -> list[str]:
    """One row per published experiment: its setup and number, the stand-in's setup (what differs) and its
    measured accuracy at the stated size (or `commands[row]`, the command that measures it), the full-size
    offline command and its estimated CPU time."""
    lines = ["| published experiment | published setup (train / validation / test reviews) | published accuracy "
             "| offline stand-in, as measured here (what differs) | accuracy here | 95% CI | whole row "
             "| full-size offline command | its estimated CPU time |", "|---|---|---|---|---|---|---|---|---|"]
    for row in published:
        counterpart, here = COUNTERPARTS[row.name]
        theirs = setup(row.config)
        mine = setup(measured[here].config) if here in measured else {}
        r = rows.get(here) or {}
        est = estimate(offline[counterpart].config, rates)
        number = (f"{row.published['accuracy']:.4f} ({row.published['source']})" if row.published
                  else "none stated")
        ci = (f"[{r['accuracy_ci_low']:.3f}, {r['accuracy_ci_high']:.3f}]"
              if r.get("accuracy_ci_low") is not None else "")
        acc = f"**{r['accuracy']:.4f}**" if r.get("accuracy") is not None else f"not run yet: `{commands[here]}`"
        lines.append(" | ".join([
            f"| {row.name}", cell("; ".join(v for v in theirs.values() if v)), cell(number),
            f"`{here}`: {cell(_differences(mine, theirs))}", acc, ci, duration(wall.get(here)),
            f"`sentitune bench configs/benches/offline.yaml --rows {counterpart}`",
            duration(est) if est is not None else "about a minute (tfidf rows: measured)"]) + " |")
    return lines
