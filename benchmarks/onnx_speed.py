"""Torch fp32 vs ONNX Runtime fp32 vs ONNX Runtime int8 on real IMDb test reviews: reviews/s and accuracy.

A saved run's model scores the same N test reviews (a stratified, seeded subsample of the real archive,
encoded as the run encodes them) three ways: torch fp32 (what `evaluate`/`predict` do by default), its
ONNX graph in ONNX Runtime (`--backend onnx`) and the int8 dynamic-quantized graph (`--quantize int8`).
The three take turns for --rounds rounds (so a neighbour's load on a shared machine hits them alike) and
the median round is reported. The graphs go to a temporary folder: the run directory is only read.

    .venv/bin/python benchmarks/onnx_speed.py [--run runs/minilm-lora-quickstart] [--n 160] [--write onnx-speed]
    .venv/bin/python benchmarks/onnx_speed.py --compare-quantization   # QInt8/QUInt8 x per-tensor/per-channel
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sentitune.config import replace
from sentitune.data.batching import Encoded, encode, encoding_args
from sentitune.data.sources import load_splits
from sentitune.evaluation import score
from sentitune.export.onnx import OnnxScorer, export_onnx, int8_path
from sentitune.metrics import classification_metrics
from sentitune.models.registry import is_decoder
from sentitune.models.saving import load_model
from sentitune.runs import RunDir
from sentitune.runtime import cores, set_threads

ROOT = Path(__file__).resolve().parents[1]
# The quickstart run (configs/experiments/minilm-lora-quickstart.yaml), in this checkout or the main one.
QUICKSTART = (ROOT / "runs" / "minilm-lora-quickstart", Path("/work/main/runs/minilm-lora-quickstart"))
DEFAULT_RUN = next((p for p in QUICKSTART if (p / "model").is_dir()), QUICKSTART[0])
DEFAULT_DATA = Path(os.environ.get("SENTITUNE_IMDB", "/work/shared/data/aclImdb_v1.tar.gz"))


def timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def compare_quantization(fp32: Path, data: Encoded, pad_id: int, batch: int, threads: int,
                         reference: np.ndarray) -> str:
    """The int8 settings export.onnx.quantize_int8 chose from: accuracy and distance to fp32 of each."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    lines = ["| weights | scales | accuracy | max abs diff | mean abs diff | reviews/s |", "|---|---|---|---|---|---|"]
    for weight in (QuantType.QInt8, QuantType.QUInt8):
        for per_channel in (False, True):
            out = fp32.with_name(f"q-{weight.name}-{per_channel}.onnx")
            quantize_dynamic(str(fp32), str(out), weight_type=weight, per_channel=per_channel)
            scorer = OnnxScorer(out, threads)
            probs, seconds = timed(lambda s=scorer: s.score(data, batch, pad_id)[0])
            diff = np.abs(probs - reference)
            lines.append(f"| {weight.name} | {'per channel' if per_channel else 'per tensor'} | "
                         f"{classification_metrics(data.labels, probs)['accuracy']:.4f} | {diff.max():.4f} | "
                         f"{diff.mean():.5f} | {len(data) / seconds:.1f} |")
            print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN, help="a saved run (a trained transformer)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the IMDb archive")
    parser.add_argument("--n", type=int, default=160, help="test reviews (stratified subsample)")
    parser.add_argument("--batch-size", type=int, help="default: the run's train.eval_batch_size")
    parser.add_argument("--threads", type=int, default=cores())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-quantization", action="store_true",
                        help="also score every int8 setting (weight type x per-channel)")
    parser.add_argument("--write", metavar="NAME", help="put the table into docs/PERFORMANCE.md between NAME markers")
    args = parser.parse_args()
    if not (args.run / "model").is_dir():
        raise SystemExit(f"{args.run}: no saved model (train one, e.g. "
                         "configs/experiments/minilm-lora-quickstart.yaml, or pass --run)")
    set_threads(args.threads)
    cfg = RunDir(args.run).config()
    examples = load_splits(replace(cfg.data, path=str(args.data), eval_size=args.n), cfg.train.seed).test
    model, tokenizer = load_model(args.run / "model")
    data = encode(examples, tokenizer, **encoding_args(cfg.data, is_decoder(model.backbone.config)))
    batch, pad_id = args.batch_size or cfg.train.eval_batch_size, tokenizer.pad_token_id
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.onnx"
        _, export_seconds = timed(lambda: export_onnx(model, fp32, quantize="int8"))
        scorers: dict[str, Callable[[Encoded], np.ndarray]] = {
            "torch fp32": lambda d: score(model, d, batch, pad_id)[0]}
        for name, path in (("ORT fp32", fp32), ("ORT int8", int8_path(fp32))):
            session = OnnxScorer(path, args.threads)
            scorers[name] = lambda d, s=session: s.score(d, batch, pad_id)[0]
        warm_up = Encoded(data.ids[:batch], data.input_ids[:batch], data.labels[:batch])
        for fn in scorers.values():  # first-call allocations and kernel choices are not the steady state
            fn(warm_up)
        probs: dict[str, np.ndarray] = {}
        seconds: dict[str, list[float]] = {name: [] for name in scorers}
        for _ in range(args.rounds):
            for name, fn in scorers.items():
                probs[name], took = timed(lambda f=fn: f(data))
                seconds[name].append(took)
        sizes = {"torch fp32": None, "ORT fp32": fp32.stat().st_size, "ORT int8": int8_path(fp32).stat().st_size}
        quant = compare_quantization(fp32, data, pad_id, batch, args.threads, probs["torch fp32"]) \
            if args.compare_quantization else ""
    load = f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    tokens = data.num_tokens()
    reference = probs["torch fp32"]
    lines = ["| backend | reviews/s | tokens/s | speed-up | accuracy | max abs diff vs torch | graph MB |",
             "|---|---|---|---|---|---|---|"]
    base = statistics.median(seconds["torch fp32"])
    for name in scorers:
        median = statistics.median(seconds[name])
        accuracy = classification_metrics(data.labels, probs[name])["accuracy"]
        size = f"{sizes[name] / 1e6:.1f}" if sizes[name] else "-"
        lines.append(f"| {name} | {len(data) / median:.1f} | {tokens / median:.0f} | {base / median:.2f}x | "
                     f"{accuracy:.4f} | {np.abs(probs[name] - reference).max():.1e} | {size} |")
    command = "python benchmarks/onnx_speed.py " + " ".join(sys.argv[1:])
    body = (f"```\n{command}\n```\n\n{len(data)} IMDb test reviews ({tokens} tokens, max_length "
            f"{cfg.data.max_length}), run `{args.run.name}` ({cfg.model.spec}, {cfg.method.name}), batches of "
            f"{batch}, {args.threads} threads, median of {args.rounds} interleaved rounds; export + int8 "
            f"quantization took {export_seconds:.0f} s; 1-minute load average {load} (the CPU is shared; "
            "this process alone makes it 2).\n\n" + "\n".join(lines) + "\n")
    if quant:
        body += f"\nint8 settings (one pass each; accuracy and distance to torch fp32):\n\n{quant}"
    print(body)
    if args.write:
        sys.path.insert(0, str(Path(__file__).parent))
        from docs_block import write_block

        write_block(ROOT / "docs" / "PERFORMANCE.md", args.write, body)


if __name__ == "__main__":
    main()
