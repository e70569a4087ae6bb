"""Zero-/few-shot benchmark: a prompt sweep on validation, then raw vs calibrated vs few-shot on test.

    .venv/bin/python benchmarks/zero_shot.py            # SmolLM2-135M, 2,000 test reviews

Stages run in order and every finished chunk of margins is cached (--cache, keyed by stage,
template, review length and review id), so an interrupted run resumes where it stopped; after each
chunk the results (JSON + a markdown block between the markers in docs/ZERO_SHOT.md) are rewritten,
marked partial until the last stage finishes. Stages: (1) the sweep: every `template@review_tokens`
entry scored on the calibration slice (validation, carved from train; `a+b@N` is a prompt ensemble,
built from its members' cached margins); (2) with --template auto,
the entry with the best validation ROC AUC is chosen (test is never looked at to choose); (3) that
prompt zero-shot and k-shot on the test reviews, each with its raw and three calibrated decisions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BLOCK = "zero-shot-results"  # the block of docs/ZERO_SHOT.md (docs_block's markers)
COLUMNS = ("accuracy", "precision", "recall", "f1", "roc_auc", "positive_rate", "threshold")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "aclImdb_v1.tar.gz"))
    p.add_argument("--eval-size", type=int, default=2000)
    p.add_argument("--calibration-size", type=int, default=200)
    p.add_argument("--review-tokens", type=int, default=400, help="review length for sweep entries without @N")
    p.add_argument("--truncation", default="tail")
    p.add_argument("--template", default="auto", help="a built-in template[@tokens], or auto: the sweep's best")
    p.add_argument("--shots", type=int, default=4)
    p.add_argument("--shot-tokens", type=int, default=60)
    p.add_argument("--few-shot-size", type=int, default=200, help="few-shot scores the first N test reviews")
    p.add_argument("--sweep", default="review-sentiment@200,published,review-sentiment,chat,published+review-sentiment,"
                   "published+chat,review-sentiment+chat,published+review-sentiment+chat",
                   help="template[@review_tokens] entries scored on the calibration slice; a+b: an ensemble")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--chunk", type=int, default=200, help="reviews scored between cache saves")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / "results" / "zero_shot_margins.json")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "zero_shot.json")
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "ZERO_SHOT.md")
    return p.parse_args()


class Cache:
    """Margins by (stage key) and review id, saved atomically after every chunk."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {"settings": settings, "margins": {}, "offsets": {}}
        if path.exists():  # margins are per review id, so another --eval-size reuses the overlap
            old = json.loads(path.read_text())
            if old.get("settings") == settings:
                self.data = old

    def save(self) -> None:
        from sentitune.atomic import write_json

        write_json(self.path, self.data)


def score(cache: Cache, key: str, scorer: Any, encoder: Any, examples: list[Any], chunk: int) -> np.ndarray:
    done: dict[str, float] = cache.data["margins"].setdefault(key, {})
    todo = [e for e in examples if e.id not in done]
    for i in range(0, len(todo), chunk):
        part = todo[i:i + chunk]
        for e, m in zip(part, scorer.margins(encoder, [e.text for e in part], key), strict=True):
            done[e.id] = float(m)
        cache.save()
        print(f"  {key}: {len(done)}/{len(examples)} ({scorer.tokens / max(scorer.seconds, 1e-9):.0f} tokens/s)",
              file=sys.stderr, flush=True)
    return np.array([done[e.id] for e in examples])


def markdown(result: dict[str, Any], command: str) -> str:
    """The block's body (docs_block.write_block adds the markers around it)."""
    lines = ["", f"Produced by `{command}`" + (" — **partial: still running**" if result["partial"] else "")
             + f" ({result['wall_seconds']:.0f} s, {result['tokens_per_second']} tokens/s on this machine).", ""]
    s = result["settings"]
    lines += [f"Model `{s['model']}`; calibration slice: {s['calibration_size']} validation reviews carved from "
              f"train (seed {s['seed']}); reviews cut to their last N tokens inside the template (the "
              f"`@N` of each entry). Few-shot: {s['shots']} demonstrations from train, each cut to "
              f"{s['shot_tokens']} tokens, scored on the first {s['few_shot_size']} test reviews.", ""]
    if result.get("sweep"):
        lines += [f"**1. Prompt sweep** on the {s['calibration_size']} calibration reviews (raw = threshold 0; "
                  "label-free = median-margin threshold):", "",
                  "| template@tokens | prompt | label words | raw accuracy | label-free accuracy | roc_auc | "
                  "positive_rate (raw) |", "|---|---|---|---|---|---|---|"]
        for name, row in result["sweep"].items():
            prompt = ("[chat] " if row.get("chat") else "") + row["prompt"].replace("\n", "\\n").replace("|", "\\|")
            lines.append(f"| {name} | `{prompt}` | {row['words']!r} | {row['accuracy']:.3f} | "
                         f"{row['calibrated_accuracy']:.3f} | {row['roc_auc']:.3f} | {row['positive_rate']:.3f} |")
        lines.append("")
    if result.get("selected"):
        lines += [f"**2. Selected** `{result['selected']}` (" + ("best validation ROC AUC" if s["template"] == "auto"
                  else "given by --template") + f"). **3. Test**: {result['n_test']} stratified test reviews "
                  f"(seed {s['seed']}); thresholds fitted on the calibration slice, never on test.", ""]
    if result["rows"]:
        lines += ["| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
        for name, row in result["rows"].items():
            lines.append(f"| {name} (n={row['n']}) | " + " | ".join(f"{row[c]:.3f}" for c in COLUMNS) + " |")
    if result.get("label_words"):
        words = "; ".join(f"{k}: {v['word']!r} -> {v['tokens']}" for k, v in result["label_words"].items())
        lines += ["", f"Label words and their tokens: {words}."]
    lines += ["", ""]
    return "\n".join(lines)


def write_outputs(args: argparse.Namespace, result: dict[str, Any], command: str) -> None:
    from docs_block import write_block

    from sentitune.atomic import write_json

    write_json(args.json, result)
    write_block(args.docs, BLOCK, markdown(result, command), new_doc="# Zero-shot sentiment\n")


def main() -> int:
    args = parse()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import torch

    from sentitune.config import DataConfig, ZeroShotConfig
    from sentitune.data.sources import load_splits
    from sentitune.data.splits import sample
    from sentitune.zero_shot import (
        Calibration,
        CausalScorer,
        PromptEncoder,
        calibrate,
        calibrated_rows,
        combine_margins,
        contextual_offset,
        describe_prompts,
        draw_demonstrations,
        get_templates,
        label_free_threshold,
        load_causal_lm,
        sweep_row,
    )

    niceness = os.nice(0)
    command = ((f"nice -n {niceness} " if niceness else "") + ".venv/bin/python benchmarks/zero_shot.py"
               + "".join(f" {a}" for a in sys.argv[1:]))
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    settings = {k: v for k, v in vars(args).items() if k not in ("cache", "json", "docs", "chunk", "threads",
                                                                 "batch_size", "data")}
    # Margins are keyed by prompt and review id, so only these settings invalidate the cache.
    cache = Cache(args.cache, {k: settings[k] for k in ("model", "calibration_size", "truncation", "seed",
                                                         "shots", "shot_tokens")})
    started = time.perf_counter()
    splits = load_splits(DataConfig(path=args.data, eval_size=args.eval_size), args.seed)
    test, calib = splits.test, sample(splits.validation, args.calibration_size, args.seed)
    y_test, y_cal = [e.label for e in test], [e.label for e in calib]
    model, tokenizer = load_causal_lm(args.model)
    scorer = CausalScorer(model, tokenizer.pad_token_id, args.batch_size)
    result: dict[str, Any] = {"settings": settings, "n_test": len(test), "rows": {}, "partial": True,
                              "label_words": None, "sweep": {}, "prompts": {}, "selected": None}

    def entry(spec: str) -> tuple[str, int]:
        name, _, tokens = spec.partition("@")
        get_templates(name)  # unknown names fail here, before any scoring
        return name, int(tokens) if tokens else args.review_tokens

    def encoders_for(name: str, tokens: int, demos: list[Any] | None = None) -> list[PromptEncoder]:
        return [PromptEncoder(tokenizer, t, tokens, args.truncation, demos or [], args.shot_tokens)
                for t in get_templates(name)]

    def member_margins(kind: str, encoders: list[PromptEncoder], tokens: int, split: str,
                       examples: list[Any]) -> list[np.ndarray]:
        """Each member's margins, cached under its own name: an ensemble reuses what its members scored."""
        return [score(cache, f"{kind} {e.template.name}@{tokens}/{split}", scorer, e, examples, args.chunk)
                for e in encoders]

    def offset(key: str, encoder: PromptEncoder) -> float:
        if key not in cache.data["offsets"]:
            cache.data["offsets"][key] = contextual_offset(scorer, encoder, ZeroShotConfig().content_free)
            cache.save()
        return cache.data["offsets"][key]

    def finish(partial: bool) -> None:
        result["partial"] = partial
        result["wall_seconds"] = time.perf_counter() - started
        result["tokens_per_second"] = round(scorer.tokens / scorer.seconds) if scorer.seconds else None
        write_outputs(args, result, command)

    # (1) The sweep, on the calibration slice only.
    sweep = [entry(x) for x in args.sweep.split(",") if x]
    for name, tokens in sweep:
        encoders = encoders_for(name, tokens)
        parts = member_margins("zero-shot", encoders, tokens, "calibration", calib)
        ts = [e.template for e in encoders]
        result["sweep"][f"{name}@{tokens}"] = {
            "prompt": ts[0].prompt if len(ts) == 1 else "ensemble (mean of spread-normalised margins)",
            "words": "; ".join(f"{t.positive}/{t.negative}" for t in ts), "chat": ts[0].chat and len(ts) == 1,
            "review_tokens": tokens, **sweep_row(y_cal, parts)}
        finish(partial=True)
    # (2) The choice, by validation ROC AUC (the threshold does not move it).
    if args.template == "auto":
        if not result["sweep"]:
            sys.exit("--template auto needs a --sweep")
        name, tokens = entry(max(result["sweep"], key=lambda k: result["sweep"][k]["roc_auc"]))
    else:
        name, tokens = entry(args.template)
    result["selected"] = f"{name}@{tokens}"
    # (3) Test: zero-shot and k-shot with that prompt, thresholds fitted on the calibration slice.
    kinds = {"zero-shot": encoders_for(name, tokens)}
    if args.shots:
        demos = draw_demonstrations(splits.train, args.shots, args.seed)
        kinds[f"{args.shots}-shot"] = encoders_for(name, tokens, demos)
    calibrations: dict[str, Calibration] = {}
    for kind, encoders in kinds.items():
        parts = member_margins(kind, encoders, tokens, "calibration", calib)
        offsets = [offset(f"{kind} {e.template.name}@{tokens}", e) for e in encoders]
        calibrations[kind] = calibrate(parts, offsets, y_cal)
        words, result["prompts"][kind] = describe_prompts(encoders)
        result["label_words"] = result["label_words"] or words
    result["scales"] = {kind: c.scales for kind, c in calibrations.items()}
    members = kinds["zero-shot"] if len(kinds["zero-shot"]) > 1 else []
    # Zero- and few-shot advance through test together, so a partial result compares them on the same reviews.
    for n in range(args.chunk, len(test) + args.chunk, args.chunk):
        for kind, encoders in kinds.items():
            m = n if kind == "zero-shot" else min(n, args.few_shot_size)
            fitted = calibrations[kind]
            margins = combine_margins(member_margins(kind, encoders, tokens, "test", test[:m]), fitted.scales)
            rows = calibrated_rows(y_test[:m], margins, fitted.thresholds)
            result["rows"].update({f"{kind} {k}": v for k, v in rows.items()})
        # An ensemble's members alone on the same reviews (their margins are already cached): what it adds.
        for e in members:
            key = f"zero-shot {e.template.name}@{tokens}"
            cal = score(cache, f"{key}/calibration", scorer, e, calib, args.chunk)
            alone = score(cache, f"{key}/test", scorer, e, test[:n], args.chunk)
            rows = calibrated_rows(y_test[:n], alone, {"raw": 0.0, "label-free": label_free_threshold(cal)})
            result["rows"].update({f"member {e.template.name} {k}": v for k, v in rows.items()})
        finish(partial=True)
    finish(partial=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
