"""Speed: the usual pipeline (HF Trainer + PEFT, padding to max length, no cache) vs sentitune, in ONE run.

Each arm runs in its own subprocess (so peak memory is its own) on the same model, data slice and
method; the parent prints training tokens/s, evaluation reviews/s, wall time per epoch, peak memory,
the ratio sentitune/baseline, and achieved model FLOP/s against this machine's measured matmul peak.

    python benchmarks/speed.py --method partial --train 256 --eval 256 --epochs 3 --out docs/speed-partial.json
    python benchmarks/speed.py --method lora --train 256 --eval 256 --epochs 2 --out docs/speed-lora.json

The default model is a GPT-2-size (124M, 12 blocks) GPT-2 with the real GPT-2 tokenizer and random
weights: speed does not depend on the weights' values, and the hub's `gpt2` is not reachable offline
(pass --model gpt2 where it is).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from docs_block import write_block

ROOT = Path(__file__).resolve().parents[1]


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
        f"method.freeze_layers={args.freeze}", f"train.feature_cache={str(args.method != 'lora').lower()}",
        "method.lora.r=8", "method.lora.alpha=16", "name=speed", f"train.warmup_ratio={args.warmup_ratio}",
        f"train.weight_decay={args.weight_decay}", f"model.pooling={args.pooling}",
        f"train.feature_cache_dir={json.dumps(feature_cache_dir)}",  # JSON: null, or a quoted path
    ]
    return load_config(None, sets)


def matmul_peak(dtype_name: str, size: int = 1024, reps: int = 10) -> float:
    """Measured GFLOP/s of a square matmul on this machine (same threads as the runs)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size**3 * reps / (time.perf_counter() - start) / 1e9


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


# ---------------------------------------------------------------------------- the two arms


def run_baseline(args: argparse.Namespace, model: str) -> dict[str, Any]:
    """The usual way: AutoModelForSequenceClassification + Trainer, every review padded to max length."""
    import torch
    from transformers import AutoModelForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

    from sentitune.data.sources import load_splits
    from sentitune.models.registry import load_tokenizer

    cfg = experiment(args, model)
    splits = load_splits(cfg.data, cfg.train.seed)
    tokenizer = load_tokenizer(model)

    def dataset(examples: list[Any]) -> list[dict[str, Any]]:
        enc = tokenizer([e.text for e in examples], padding="max_length", truncation=True, max_length=args.max_length)
        return [{"input_ids": i, "attention_mask": m, "labels": e.label}
                for i, m, e in zip(enc["input_ids"], enc["attention_mask"], examples, strict=True)]

    train_ds, eval_ds = dataset(splits.train), dataset(splits.test)
    net = AutoModelForSequenceClassification.from_pretrained(model, num_labels=2)
    net.config.pad_token_id = tokenizer.pad_token_id
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

    epochs: list[float] = []

    class EpochTimer(TrainerCallback):
        def on_epoch_begin(self, *a: Any, **k: Any) -> None:
            self.t = time.perf_counter()

        def on_epoch_end(self, *a: Any, **k: Any) -> None:
            epochs.append(time.perf_counter() - self.t)

    out = tempfile.mkdtemp()
    targs = TrainingArguments(output_dir=out, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
                              per_device_eval_batch_size=32, learning_rate=args.lr, save_strategy="no",
                              warmup_steps=args.warmup_ratio, weight_decay=args.weight_decay,  # < 1: a ratio
                              eval_strategy="no", logging_strategy="no", report_to=[], use_cpu=True, seed=42,
                              dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model=net, args=targs, train_dataset=train_ds, callbacks=[EpochTimer()])
    trainer.train()
    start = time.perf_counter()
    pred = trainer.predict(eval_ds)
    eval_seconds = time.perf_counter() - start
    accuracy = float((pred.predictions.argmax(-1) == pred.label_ids).mean())
    real_tokens = sum(sum(x["attention_mask"]) for x in train_ds)
    return {"epoch_seconds": epochs, "eval_seconds": eval_seconds, "eval_reviews": len(eval_ds),
            "train_tokens_per_epoch": real_tokens, "padded_tokens_per_epoch": len(train_ds) * args.max_length,
            "accuracy": accuracy, "threads": torch.get_num_threads()}


def run_sentitune(args: argparse.Namespace, model: str) -> dict[str, Any]:
    import torch

    from sentitune.train import train

    run_dir = Path(tempfile.mkdtemp()) / "run"
    with tempfile.TemporaryDirectory(prefix="sentitune-features-") as cold:
        # A cold feature cache: the first epoch and the test pass pay for computing the frozen prefix,
        # as in a first run. (The user's cache would otherwise hold it from an earlier benchmark.)
        metrics = train(experiment(args, model, None if args.warm_cache else cold), run_dir)
    return {"epoch_seconds": metrics["epoch_seconds"], "eval_seconds": metrics["test_seconds"],
            "eval_reviews": metrics["test"]["n"], "train_tokens_per_epoch": metrics["train_tokens"] / args.epochs,
            "accuracy": metrics["test"]["accuracy"], "threads": torch.get_num_threads(),
            "precision": metrics["precision"], "feature_cache": metrics["feature_cache"]}


# ---------------------------------------------------------------------------- the report

# The speed targets of the performance issue (sentitune / baseline on the same machine, in one run).
TARGETS = {
    "partial": {"later epochs (s, mean)": 5.0, "epoch 1 (s)": 1.5, "eval reviews/s": 2.0},
    "lora": {"epoch 1 (s)": 1.5, "later epochs (s, mean)": 1.5},
}


def main() -> None:
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
    parser.add_argument("--warmup-ratio", type=float, default=0.06, help="both arms (sentitune's default)")
    parser.add_argument("--weight-decay", type=float, default=0.01, help="both arms (sentitune's default)")
    parser.add_argument("--pooling", default="auto", help="sentitune's pooling; cls is closest to the Trainer "
                        "arm's BERT head (pooler on [CLS]), last is what its GPT-2 head does")
    parser.add_argument("--warm-cache", action="store_true", help="let sentitune reuse frozen-prefix features "
                        "an earlier run cached (default: a cold cache, as in a first run)")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--write", metavar="NAME", help="put the table into docs/PERFORMANCE.md under NAME")
    parser.add_argument("--arm", choices=["baseline", "sentitune"], help=argparse.SUPPRESS)
    parser.add_argument("--render", type=Path, help="re-print (and --write) the table of a saved --out JSON")
    args = parser.parse_args()
    if args.render:
        report = json.loads(args.render.read_text())
        from sentitune.models.registry import resolve

        saved = report["model"]
        path = gpt2_124m_random() if saved == "gpt2-124m-random" else resolve(saved).source
        report["flops_per_token"] = model_flops_per_token(path, report["method"], report.get("freeze", args.freeze))
        report["arms"]["sentitune"].setdefault("feature_cache", report["method"] != "lora")  # as experiment() sets
        table = format_report(report)
        print(table)
        if args.write:
            write_block(ROOT / "docs" / "PERFORMANCE.md", args.write, f"```\n{report['command']}\n```\n\n{table}\n")
        return
    from sentitune.models.registry import resolve

    model = resolve(args.model).source if args.model else gpt2_124m_random()  # both arms read the same folder

    if args.arm:  # child process: run one arm, print JSON
        result = run_baseline(args, model) if args.arm == "baseline" else run_sentitune(args, model)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(result))
        return

    results = {}
    for arm in ("baseline", "sentitune"):
        cmd = [sys.executable, __file__, "--arm", arm, *sys.argv[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not lines:
            sys.exit(f"{arm} arm failed:\n{proc.stderr[-3000:]}")
        results[arm] = json.loads(lines[-1][7:])
    flops = model_flops_per_token(model, args.method, args.freeze)
    peaks = {"fp32": matmul_peak("float32"), "bf16": matmul_peak("bfloat16")}
    command = "python benchmarks/speed.py " + " ".join(sys.argv[1:])
    report = {"command": command, "model": args.model or "gpt2-124m-random", "method": args.method,
              "freeze": args.freeze,
              "flops_per_token": flops, "matmul_peak_gflops": peaks, "arms": results}
    table = format_report(report)
    print(table)
    if args.out:
        from sentitune.atomic import write_json

        write_json(args.out, report)
    if args.write:
        write_block(ROOT / "docs" / "PERFORMANCE.md", args.write, f"```\n{report['command']}\n```\n\n{table}\n")


def format_report(r: dict[str, Any]) -> str:
    rows = []
    b, s = r["arms"]["baseline"], r["arms"]["sentitune"]

    def arm_rows(a: dict[str, Any]) -> dict[str, float]:
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

    rb, rs = arm_rows(b), arm_rows(s)
    rows.append("| metric | baseline (Trainer) | sentitune | sentitune / baseline |")
    rows.append("|---|---:|---:|---:|")
    ratios = {}
    for k in rb:
        ratio = rs[k] / rb[k] if rb[k] else float("nan")
        if "(s" in k:
            ratio = rb[k] / rs[k]  # speed-up for times
        ratios[k] = ratio
        rows.append(f"| {k} | {rb[k]:.2f} | {rs[k]:.2f} | {ratio:.2f}x |")
    # The speed targets are set for a GPT-2-size model at 512 tokens; other models report parity only.
    gpt2_size = r["model"] in ("gpt2-124m-random", "gpt2")
    checks = [(f"{k} >= {t}x", ratios[k] >= t, f"{ratios[k]:.2f}x") for k, t in TARGETS.get(r["method"], {}).items()
              if gpt2_size and ratios[k] == ratios[k]]
    if r["model"] != "gpt2-124m-random":  # random weights: accuracy means nothing
        # Noise: two standard errors of the difference of two accuracies, each on n test reviews.
        gap, n = rs["test accuracy"] - rb["test accuracy"], b["eval_reviews"]
        noise = 2 * math.sqrt(sum(a * (1 - a) for a in (rs["test accuracy"], rb["test accuracy"])) / n)
        checks.append((f"test accuracy within noise of the baseline (2 SE = {noise:.3f} at n={n})",
                       abs(gap) <= noise, f"{gap:+.3f}"))
    verdicts = (f"{name}: {got} ({'met' if ok else 'NOT met'})" for name, ok, got in checks)
    rows.append("\nIssue targets: " + "; ".join(verdicts))
    f = r["flops_per_token"]
    peak = r["matmul_peak_gflops"]
    rows.append(f"\nmatmul peak on this machine: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s. "
                f"Model FLOPs per trained token: {f['train'] / 1e6:.0f} M (forward {f['forward'] / 1e6:.0f} M).")
    for name, a in (("baseline", b), ("sentitune", s)):
        later = a["epoch_seconds"][1:] or a["epoch_seconds"]
        seconds = sum(later) / len(later)
        model_gflops = f["train"] * a["train_tokens_per_epoch"] / seconds / 1e9
        # What the arm actually computed: the baseline every padded position; sentitune real tokens only,
        # and from the cache only the blocks above the frozen prefix.
        executed = f.get("cached_train", f["train"]) if a.get("feature_cache") else f["train"]
        tokens = a.get("padded_tokens_per_epoch", a["train_tokens_per_epoch"])
        executed_gflops = executed * tokens / seconds / 1e9
        rows.append(f"- {name}, later epochs: {model_gflops:.1f} model GFLOP/s on real tokens; executed "
                    f"{executed_gflops:.1f} GFLOP/s = {100 * executed_gflops / peak['fp32']:.0f}% of the fp32 peak")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
