"""Speed: sentitune vs the Hugging Face Trainer + PEFT, padded (as published) and best-configured, in ONE run.

Three arms, each in its own subprocess (so peak memory is its own), on the same model, data slice,
method and optimizer recipe:

- `baseline`, "Trainer, padded (as published)": every review padded to max length, random batches.
- `trainer-best`, "Trainer, best-configured": truncation only, `DataCollatorWithPadding`, length-grouped
  batches (`train_sampling_strategy="group_by_length"`, transformers 5's `group_by_length=True`),
  evaluation batches of sentitune's `train.eval_batch_size`.
- `sentitune`: its own pipeline (length-grouped batches, the frozen-prefix feature cache for partial).

Every arm freezes with requires_grad=False (or PEFT LoRA) and runs in the precision sentitune's `auto`
picks on this CPU (bf16 autocast where oneDNN has native bf16, else fp32; `$SENTITUNE_PRECISION=fp32`
forces fp32 everywhere), for training and evaluation alike. The parent prints epoch times, training
tokens/s, evaluation reviews/s, peak memory, sentitune's ratio to each Trainer arm, the speed targets,
the machine, and achieved FLOP/s against the measured matmul peak of the precision each arm ran in.

    python benchmarks/speed.py --method partial --train 128 --eval 128 --epochs 3 --out speed-partial.json
    python benchmarks/speed.py --method lora --train 64 --eval 64 --epochs 2 --out speed-lora.json
    python benchmarks/speed.py ... --arms trainer-best --reuse speed-partial.json   # rerun one arm
    python benchmarks/speed.py ... --rounds 2      # every arm twice, interleaved; each arm's fastest times
    python benchmarks/speed.py --render speed-partial.json [--write NAME]          # print a saved run again

The default model is a GPT-2-size (124M, 12 blocks) GPT-2 with the real GPT-2 tokenizer and random
weights: speed does not depend on the weights' values, and the hub's `gpt2` is not reachable offline
(pass --model gpt2 where it is).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from docs_block import command_block, home, write_block
from machine import cores_line, facts, isa_caps

ROOT = Path(__file__).resolve().parents[1]
# Where --write NAME goes: the page that holds block NAME (the earlier runs' blocks moved to the history page),
# a new NAME into the guide.
DOCS = (ROOT / "docs" / "PERFORMANCE.md", ROOT / "docs" / "history" / "PERFORMANCE-HISTORY.md")


# ---------------------------------------------------------------------------- shared pieces


def gpt2_124m_random() -> str:
    """A GPT-2-size model folder (random weights, real GPT-2 tokenizer), built once in the cache."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    from sentitune.atomic import atomic_dir
    from sentitune.models.registry import resolve
    from sentitune.paths import cache_dir

    folder = cache_dir("models") / "gpt2-124m-random"
    if not (folder / "config.json").exists():
        import torch

        tiny = Path(resolve("gpt2-tiny-random").source)  # has the real GPT-2 vocab.json/merges.txt
        tokenizer = GPT2TokenizerFast.from_pretrained(tiny)
        torch.manual_seed(0)
        with atomic_dir(folder, keep_theirs="config.json") as tmp:  # another benchmark run may finish it first
            GPT2LMHeadModel(GPT2Config()).save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    return str(folder)


def experiment(args: argparse.Namespace, model: str, feature_cache_dir: str | None = None) -> Any:
    from sentitune.config import load_config

    sets = [
        f"model.spec={model}", f"method.name={args.method}", f"data.train_size={args.train}",
        f"data.eval_size={args.eval}", "data.val_size=0", f"data.max_length={args.max_length}",
        f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}", f"train.lr={args.lr}",
        "train.baseline=false", "train.checkpoint_every=null", "train.precision=auto", "model.head=softmax",
        "train.eval_precision=auto",  # the Trainer arms evaluate in their training precision: so does this one
        f"method.freeze_layers={args.freeze}", f"train.feature_cache={str(args.method != 'lora').lower()}",
        "method.lora.r=8", "method.lora.alpha=16", "name=speed", f"train.warmup_ratio={args.warmup_ratio}",
        f"train.weight_decay={args.weight_decay}", f"model.pooling={args.pooling}",
        f"train.feature_cache_dir={json.dumps(feature_cache_dir)}",  # JSON: null, or a quoted path
    ]
    return load_config(None, sets)


def matmul_peak(dtype_name: str, size: int = 1024, reps: int = 10) -> float:
    """Measured GFLOP/s of a square matmul on this machine (same threads as the runs): the best of 3 timings,
    since one timing right after heavy work can read less than half the peak (seen with bf16/AMX)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * size**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def model_flops_per_token(model: str, method: str, freeze: int) -> dict[str, float]:
    """Forward 2N per token over all blocks; backward 4N over the blocks that train (2N for LoRA:
    activation gradients only, the adapters are negligible). N excludes embeddings (lookups)."""
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model)
    per_block = 12 * c.hidden_size**2  # attention 4h^2 + MLP 8h^2 (GPT-2, 4x MLP)
    n_all = per_block * c.num_hidden_layers
    if method == "partial":
        backward = 4 * per_block * (c.num_hidden_layers - freeze)
    elif method == "lora":
        backward = 2 * n_all
    else:
        backward = 4 * n_all
    top = per_block * (c.num_hidden_layers - freeze) if method == "partial" else 0
    # From the cache only the top blocks run: their forward (2) and backward (4).
    return {"forward": 2 * n_all, "train": 2 * n_all + backward, "cached_train": 6 * top}


# ---------------------------------------------------------------------------- the three arms

ARMS = ("baseline", "trainer-best", "sentitune")


def training_dtype() -> Any:
    """The one precision rule for every arm: what sentitune's `train.precision: auto` picks on this CPU
    (bf16 where oneDNN runs it natively, else fp32; $SENTITUNE_PRECISION overrides), or None for fp32."""
    import torch

    from sentitune.precision import pick_precision

    return pick_precision("auto", torch.device("cpu"))


class CountingCollator:
    """A collator that counts the token positions it hands the model (real tokens and padding): what a
    Trainer arm actually computed, for the executed-FLOP/s line."""

    def __init__(self, collate: Any) -> None:
        self.collate, self.positions = collate, 0

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        batch = self.collate(features)
        self.positions += int(batch["input_ids"].numel())
        return batch


def trainer_model(args: argparse.Namespace, model: str, pad_token_id: int) -> Any:
    """AutoModelForSequenceClassification as a Trainer user sets it up: requires_grad=False on the
    embeddings and the first N blocks (partial; all blocks for probe), or PEFT LoRA on every block."""
    from transformers import AutoModelForSequenceClassification

    net = AutoModelForSequenceClassification.from_pretrained(model, num_labels=2)
    net.config.pad_token_id = pad_token_id
    model_type = net.config.model_type
    if args.method in ("partial", "probe"):
        # The usual recipe: requires_grad=False on embeddings and the first N blocks, nothing else.
        frozen = args.freeze if args.method == "partial" else net.config.num_hidden_layers
        for name, p in net.named_parameters():
            parts = name.split(".")
            block = next((int(parts[i + 1]) for i, x in enumerate(parts[:-1])
                          if x in ("h", "layer", "layers") and parts[i + 1].isdigit()), None)
            if "embed" in name or parts[-2] in ("wte", "wpe") or (block is not None and block < frozen):
                p.requires_grad = False
    elif args.method == "lora":
        from peft import LoraConfig, get_peft_model

        from sentitune.models.registry import default_lora_targets

        net = get_peft_model(net, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.1,
                                             target_modules=default_lora_targets(model_type),
                                             fan_in_fan_out=model_type == "gpt2"))
    return net


def run_trainer(args: argparse.Namespace, model: str, best: bool) -> dict[str, Any]:
    """A Hugging Face Trainer arm.

    best=False, "as published": every review padded to max length at tokenization, random batches,
    evaluation in batches of 32. best=True, what a user who knows the Trainer configures: truncation
    only, `DataCollatorWithPadding` (each batch padded to its longest review), length-grouped batches
    (`train_sampling_strategy="group_by_length"`, the transformers 5 name of `group_by_length=True`; it
    groups evaluation batches too), evaluation in batches of sentitune's `train.eval_batch_size`.
    Both: bf16 autocast (`bf16=True`, training and evaluation) exactly where sentitune's auto picks bf16.
    """
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments, default_data_collator

    from sentitune.data.sources import load_splits
    from sentitune.models.registry import load_tokenizer
    from sentitune.precision import name as precision_name

    cfg = experiment(args, model)
    splits = load_splits(cfg.data, cfg.train.seed)
    tokenizer = load_tokenizer(model)
    padding: Any = False if best else "max_length"

    def dataset(examples: list[Any]) -> list[dict[str, Any]]:
        enc = tokenizer([e.text for e in examples], padding=padding, truncation=True, max_length=args.max_length)
        return [{"input_ids": i, "attention_mask": m, "labels": e.label}
                for i, m, e in zip(enc["input_ids"], enc["attention_mask"], examples, strict=True)]

    train_ds, eval_ds = dataset(splits.train), dataset(splits.test)
    net = trainer_model(args, model, tokenizer.pad_token_id)
    collator = CountingCollator(DataCollatorWithPadding(tokenizer) if best else default_data_collator)

    epochs: list[float] = []

    class EpochTimer(TrainerCallback):
        def on_epoch_begin(self, *a: Any, **k: Any) -> None:
            self.t = time.perf_counter()

        def on_epoch_end(self, *a: Any, **k: Any) -> None:
            epochs.append(time.perf_counter() - self.t)

    dtype = training_dtype()
    eval_batch = cfg.train.eval_batch_size if best else 32
    # transformers 5 names it train_sampling_strategy="group_by_length"; 4.x had group_by_length=True.
    renamed = "train_sampling_strategy" in {f.name for f in dataclasses.fields(TrainingArguments)}
    grouped = {"train_sampling_strategy": "group_by_length"} if renamed else {"group_by_length": True}
    extra: dict[str, Any] = grouped if best else {}
    targs = TrainingArguments(output_dir=tempfile.mkdtemp(), num_train_epochs=args.epochs,
                              per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=eval_batch,
                              learning_rate=args.lr, save_strategy="no",
                              warmup_steps=args.warmup_ratio, weight_decay=args.weight_decay,  # < 1: a ratio
                              eval_strategy="no", logging_strategy="no", report_to=[], use_cpu=True, seed=42,
                              dataloader_num_workers=0, disable_tqdm=True, bf16=dtype == torch.bfloat16, **extra)
    # processing_class: the length-grouped sampler reads each review's length from its input_ids.
    trainer = Trainer(model=net, args=targs, train_dataset=train_ds, data_collator=collator,
                      processing_class=tokenizer if best else None, callbacks=[EpochTimer()])
    trainer.train()
    train_positions, collator.positions = collator.positions, 0
    start = time.perf_counter()
    pred = trainer.predict(eval_ds)
    eval_seconds = time.perf_counter() - start
    accuracy = float((pred.predictions.argmax(-1) == pred.label_ids).mean())
    real_tokens = sum(sum(x["attention_mask"]) for x in train_ds)
    return {"epoch_seconds": epochs, "eval_seconds": eval_seconds, "eval_reviews": len(eval_ds),
            "train_tokens_per_epoch": real_tokens, "padded_tokens_per_epoch": train_positions / args.epochs,
            "eval_positions": collator.positions, "eval_batch_size": eval_batch,
            "accuracy": accuracy, "threads": torch.get_num_threads(),
            "precision": precision_name(dtype), "eval_precision": precision_name(dtype)}


def run_sentitune(args: argparse.Namespace, model: str) -> dict[str, Any]:
    import torch

    from sentitune.training import train

    run_dir = Path(tempfile.mkdtemp()) / "run"
    with tempfile.TemporaryDirectory(prefix="sentitune-features-") as cold:
        # A cold feature cache: the first epoch and the test pass pay for computing the frozen prefix,
        # as in a first run. (The user's cache would otherwise hold it from an earlier benchmark.)
        metrics = train(experiment(args, model, None if args.warm_cache else cold), run_dir)
    return {"epoch_seconds": metrics["epoch_seconds"], "eval_seconds": metrics["test_seconds"],
            "eval_reviews": metrics["test"]["n"], "train_tokens_per_epoch": metrics["train_tokens"] / args.epochs,
            "accuracy": metrics["test"]["accuracy"], "threads": torch.get_num_threads(),
            "precision": metrics["precision"], "eval_precision": metrics["eval_precision"],
            "feature_cache": metrics["feature_cache"]}


def run_arm(arm: str, args: argparse.Namespace, model: str) -> dict[str, Any]:
    if arm == "sentitune":
        return run_sentitune(args, model)
    return run_trainer(args, model, best=arm == "trainer-best")


# ---------------------------------------------------------------------------- the report

# Speed targets: sentitune / a Trainer arm on the same machine, in one run, for a GPT-2-size model at 512
# tokens. Against the padded Trainer: the first speed targets. Against the best-configured Trainer:
# the later, stricter ones. LoRA has targets against the padded Trainer only: its gains are length-grouped batches and
# dynamic padding, which the best-configured Trainer has too (no cache: every block carries adapters).
TARGETS_PADDED = {
    "partial": {"later epochs (s, mean)": 5.0, "epoch 1 (s)": 1.5, "eval reviews/s": 2.0},
    "lora": {"epoch 1 (s)": 1.5, "later epochs (s, mean)": 1.5},
}
TARGETS = {
    "partial": {"later epochs (s, mean)": 3.0, "epoch 1 (s)": 1.2, "eval reviews/s": 1.2},
}
TARGETS_BY_REF = {"baseline": TARGETS_PADDED, "trainer-best": TARGETS}


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What must match for arms from two runs to share a report (--reuse)."""
    keys = ("model", "method", "freeze", "train", "eval", "epochs", "batch_size", "max_length", "lr",
            "warmup_ratio", "weight_decay", "pooling", "warm_cache")
    return {k: getattr(args, k) for k in keys}


def speed_args(**changes: Any) -> argparse.Namespace:
    """This script's settings (its defaults, with `changes`), for scripts that build the same experiment."""
    args = build_parser().parse_args([])
    for key, value in changes.items():
        if not hasattr(args, key):
            raise AttributeError(f"speed.py has no setting {key!r}")
        setattr(args, key, value)
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec (default: GPT-2-size random GPT-2)")
    parser.add_argument("--method", default="partial", choices=["partial", "lora", "probe"])
    parser.add_argument("--freeze", type=int, default=10)
    parser.add_argument("--train", type=int, default=256)
    parser.add_argument("--eval", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup-ratio", type=float, default=0.06, help="every arm (sentitune's default)")
    parser.add_argument("--weight-decay", type=float, default=0.01, help="every arm (sentitune's default)")
    parser.add_argument("--pooling", default="auto", help="sentitune's pooling; cls is closest to the Trainer "
                        "arms' BERT head (pooler on [CLS]), last is what their GPT-2 head does")
    parser.add_argument("--warm-cache", action="store_true", help="let sentitune reuse frozen-prefix features "
                        "an earlier run cached (default: a cold cache, as in a first run)")
    parser.add_argument("--arms", default=",".join(ARMS),
                        help=f"comma-separated arms to run, of {', '.join(ARMS)} (default: all three)")
    parser.add_argument("--reuse", type=Path, help="take the arms not in --arms from this saved --out JSON (same "
                        "settings), to rerun one arm; the report says which arms came from another run")
    parser.add_argument("--rounds", type=int, default=1, help="run every arm this many times, interleaved, and "
                        "report each arm's fastest times (for a shared machine whose speed varies; default 1)")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--write", metavar="NAME", help="put the table into docs/PERFORMANCE.md under NAME (into "
                        "docs/history/PERFORMANCE-HISTORY.md if that page holds block NAME)")
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--render", type=Path, help="re-print (and --write) the table of a saved --out JSON")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.render:
        report = json.loads(args.render.read_text())
        from sentitune.models.registry import resolve

        saved = report["model"]
        path = gpt2_124m_random() if saved == "gpt2-124m-random" else resolve(saved).source
        report["flops_per_token"] = model_flops_per_token(path, report["method"], report.get("freeze", args.freeze))
        if "sentitune" in report["arms"]:
            report["arms"]["sentitune"].setdefault("feature_cache", report["method"] != "lora")  # as experiment()
        table = format_report(report)
        print(table)
        if args.write:
            write_block(home(args.write, *DOCS), args.write, command_block(report["command"], table))
        return
    if args.rounds < 1:
        parser.error(f"--rounds: {args.rounds}: give 1 or more")
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or any(a not in ARMS for a in arms):
        parser.error(f"--arms: {args.arms!r}: give one or more of {', '.join(ARMS)}, comma-separated")
    from sentitune.models.registry import resolve

    model = resolve(args.model).source if args.model else gpt2_124m_random()  # every arm reads the same folder

    if args.arm:  # child process: run one arm, print JSON
        result = run_arm(args.arm, args, model)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(result))
        return

    results: dict[str, Any] = {}
    reused: list[str] = []
    if args.reuse:
        old = json.loads(args.reuse.read_text())
        theirs, ours = old.get("settings"), settings(args)
        if theirs is None:
            sys.exit(f"--reuse {args.reuse}: saved no settings (written before --reuse existed); rerun every arm")
        if theirs != ours:
            differ = ", ".join(f"{k} {theirs.get(k, '(not saved)')!r} there, {v!r} here"
                               for k, v in ours.items() if theirs.get(k, "(not saved)") != v)
            sys.exit(f"--reuse {args.reuse}: other settings: {differ}")
        reused = [a for a in ARMS if a in old["arms"] and a not in arms]
        results.update({a: old["arms"][a] for a in reused})
    rounds: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    for r in range(args.rounds):
        for arm in arms[r % len(arms):] + arms[: r % len(arms)]:  # interleaved; each round starts one arm later
            cmd = [sys.executable, __file__, "--arm", arm, *sys.argv[1:]]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not lines:
                sys.exit(f"{arm} arm failed (round {r + 1}):\n{proc.stderr[-3000:]}")
            rounds[arm].append(json.loads(lines[-1][7:]))
            print(f"round {r + 1}/{args.rounds}: {arm} done", file=sys.stderr, flush=True)
    results.update({arm: fastest_of(runs) for arm, runs in rounds.items()})
    flops = model_flops_per_token(model, args.method, args.freeze)
    peaks = {"fp32": matmul_peak("float32"), "bf16": matmul_peak("bfloat16")}
    caps = "".join(f"{k}={v} " for k, v in isa_caps().items())  # part of the command: they change the machine
    command = caps + "python benchmarks/speed.py " + " ".join(sys.argv[1:])
    report = {"command": command, "model": args.model or "gpt2-124m-random", "method": args.method,
              "freeze": args.freeze, "settings": settings(args), "machine": facts(),
              "flops_per_token": flops, "matmul_peak_gflops": peaks,
              "arms": {a: results[a] for a in ARMS if a in results}}
    if reused:
        report["reused"] = {"arms": reused, "from": str(args.reuse), "command": old["command"]}
    table = format_report(report)
    print(table)
    if args.out:
        from sentitune.atomic import write_json

        write_json(args.out, report)
    if args.write:
        write_block(home(args.write, *DOCS), args.write, command_block(report["command"], table))


def fastest_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One arm's result from its rounds: each time the fastest round's (other work on a shared machine only
    ever slows a run down: on our shared machine the bf16 matmul rate varies over 2x from second to second), peak
    memory the largest, accuracy the first round's; every round is kept under "rounds"."""
    if len(runs) == 1:
        return runs[0]
    best = dict(runs[0])
    best["epoch_seconds"] = [min(epoch) for epoch in zip(*(r["epoch_seconds"] for r in runs), strict=True)]
    best["eval_seconds"] = min(r["eval_seconds"] for r in runs)
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    best["rounds"] = runs
    return best


def arm_rows(a: dict[str, Any]) -> dict[str, float]:
    """One arm's column of the table."""
    first, later = a["epoch_seconds"][0], a["epoch_seconds"][1:]
    later_mean = sum(later) / len(later) if later else float("nan")
    tokens = a["train_tokens_per_epoch"]
    return {
        "epoch 1 (s)": first,
        "later epochs (s, mean)": later_mean,
        "train tokens/s, epoch 1": tokens / first,
        "train tokens/s, later": tokens / later_mean if later else float("nan"),
        "eval reviews/s": a["eval_reviews"] / a["eval_seconds"],
        "peak RSS (MB)": a["peak_rss_mb"],
        "test accuracy": a["accuracy"],
    }


def speedup(key: str, ours: float, theirs: float) -> float:
    """sentitune / the other arm, and for times the other arm / sentitune: above 1 is sentitune ahead."""
    if "(s" in key:
        return theirs / ours if ours else float("nan")
    return ours / theirs if theirs else float("nan")


def format_report(r: dict[str, Any]) -> str:
    """The table, the targets, the machine and the FLOP/s lines. A report saved before the best-configured
    arm existed (no "machine") renders exactly as it was written into the docs then."""
    legacy = "machine" not in r
    if legacy:
        labels = {"baseline": "baseline (Trainer)", "sentitune": "sentitune"}
        short = {"baseline": "baseline"}
        noise_of = {"baseline": "the baseline"}
    else:
        labels = {"baseline": "Trainer, padded (as published)", "trainer-best": "Trainer, best-configured",
                  "sentitune": "sentitune"}
        short = {"baseline": "padded", "trainer-best": "best"}
        noise_of = {"baseline": "the padded Trainer", "trainer-best": "the best-configured Trainer"}
    arms = [a for a in ARMS if a in r["arms"]]
    cols = {a: arm_rows(r["arms"][a]) for a in arms}
    refs = [a for a in ("baseline", "trainer-best") if a in arms and "sentitune" in arms]
    rows = ["| metric | " + " | ".join(labels[a] for a in arms) + "".join(
        f" | sentitune / {short[ref]}" for ref in refs) + " |",
        "|---|" + "---:|" * (len(arms) + len(refs))]
    ratios: dict[str, dict[str, float]] = {ref: {} for ref in refs}
    for k in cols[arms[0]]:
        cells = [f"{cols[a][k]:.2f}" for a in arms]
        for ref in refs:
            ratios[ref][k] = speedup(k, cols["sentitune"][k], cols[ref][k])
            cells.append(f"{ratios[ref][k]:.2f}x")
        rows.append(f"| {k} | " + " | ".join(cells) + " |")
    # The speed targets are set for a GPT-2-size model at 512 tokens; other models report parity only.
    gpt2_size = r["model"] in ("gpt2-124m-random", "gpt2")
    for ref in refs:
        got = ratios[ref]
        checks = [(f"{k} >= {t}x", got[k] >= t, f"{got[k]:.2f}x")
                  for k, t in TARGETS_BY_REF[ref].get(r["method"], {}).items() if gpt2_size and got[k] == got[k]]
        if r["model"] != "gpt2-124m-random":  # random weights: accuracy means nothing
            # Noise: two standard errors of the difference of two accuracies, each on n test reviews.
            ours, theirs = cols["sentitune"]["test accuracy"], cols[ref]["test accuracy"]
            n = r["arms"][ref]["eval_reviews"]
            noise = 2 * math.sqrt(sum(a * (1 - a) for a in (ours, theirs)) / n)
            checks.append((f"test accuracy within noise of {noise_of[ref]} (2 SE = {noise:.3f} at n={n})",
                           abs(ours - theirs) <= noise, f"{ours - theirs:+.3f}"))
        if not checks:
            continue
        verdicts = "; ".join(f"{name}: {value} ({'met' if ok else 'NOT met'})" for name, ok, value in checks)
        head = "Targets" if legacy else {
            "baseline": "Targets against the padded Trainer",
            "trainer-best": "Targets against the best-configured Trainer"}[ref]
        rows.append(f"\n{head}: {verdicts}")
    counts = {len(r["arms"][a].get("rounds", [None])) for a in arms}
    if counts != {1}:
        rows.append(f"\nTimes: each arm's fastest of {'/'.join(str(c) for c in sorted(counts))} rounds, the arms "
                    "interleaved (each round starts one arm later): other work on a shared machine only ever slows a "
                    "run down. Peak memory: the largest; accuracy: the first round's. Every round is in the JSON.")
    if "reused" in r:
        rows.append(f"\nNot all in one run: {', '.join(r['reused']['arms'])} from an earlier run "
                    f"(`{r['reused']['command']}`), the others rerun.")
    f = r["flops_per_token"]
    peak = r["matmul_peak_gflops"]
    if not legacy:
        m = r["machine"]
        who = {"sentitune": "sentitune", **noise_of}
        precisions = ", ".join(f"{who[a].removeprefix('the ')} {r['arms'][a].get('precision', 'fp32')}/"
                               f"{r['arms'][a].get('eval_precision', 'fp32')}" for a in arms)
        rows.append(f"\nMachine: {cores_line(m)}, native bf16 "
                    f"(oneDNN): {'yes' if m['bf16_native'] else 'no'}"
                    + (f", kernels capped at {m['isa_caps'].get('ONEDNN_MAX_CPU_ISA', 'a lower instruction set')}"
                       f" ({', '.join(f'{k}={v}' for k, v in m['isa_caps'].items())}): how a CPU without bf16 runs"
                       if m.get("isa_caps") else "")
                    + f". Precision, training/evaluation (one rule for every arm: what sentitune's auto picks): "
                    f"{precisions}.")
    rows.append(f"\nmatmul peak on this machine: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s. "
                f"Model FLOPs per trained token: {f['train'] / 1e6:.0f} M (forward {f['forward'] / 1e6:.0f} M).")
    for name in arms:
        a = r["arms"][name]
        later = a["epoch_seconds"][1:] or a["epoch_seconds"]
        seconds = sum(later) / len(later)
        model_gflops = f["train"] * a["train_tokens_per_epoch"] / seconds / 1e9
        # What the arm actually computed: a Trainer arm every position it was handed (padding included);
        # sentitune real tokens only, and from the cache only the blocks above the frozen prefix.
        executed = f.get("cached_train", f["train"]) if a.get("feature_cache") else f["train"]
        tokens = a.get("padded_tokens_per_epoch", a["train_tokens_per_epoch"])
        executed_gflops = executed * tokens / seconds / 1e9
        precision = a.get("precision", "fp32")  # against the peak of the precision the arm ran in
        share = (f"= {100 * executed_gflops / peak[precision]:.0f}% of the {precision} peak" if precision in peak
                 else f"({precision}: no measured peak)")
        rows.append(f"- {name}, later epochs: {model_gflops:.1f} model GFLOP/s on real tokens; executed "
                    f"{executed_gflops:.1f} GFLOP/s {share}")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
