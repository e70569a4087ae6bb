"""GPT-2's activation: its own `gelu_new` (a chain of elementwise ops) against the fused `gelu_pytorch_tanh`.

sentitune loads GPT-2 backbones with the fused kernel of the same function (models/registry.load_backbone);
the Trainer arms of benchmarks/speed.py run the model as saved. This times one forward pass over the speed
benchmark's test slice (same reviews, 512 tokens, sorted batches of 16, the precision `auto` picks) with
each activation, interleaved over rounds (fastest round reported: a shared machine's speed varies), and
checks the two compute the same function (largest difference of the final hidden states in fp32).

    python benchmarks/activation_kernel.py --write activation-kernel
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from docs_block import publish
from machine import cpu_name
from speed import experiment, gpt2_124m_random, speed_args

from sentitune.data.batching import encode, encoding_args, iterate, sorted_batches
from sentitune.data.sources import load_splits
from sentitune.models.registry import load_tokenizer
from sentitune.precision import autocast, pick_precision
from sentitune.precision import name as precision_name

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("gelu_new", "gelu_pytorch_tanh")


def use_activation(model: torch.nn.Module, kind: str) -> None:
    from transformers.activations import ACT2FN

    for block in model.h:
        block.mlp.act = ACT2FN[kind]


@torch.inference_mode()
def forward_seconds(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], dtype: torch.dtype | None) -> float:
    start = time.perf_counter()
    for batch in batches:
        with autocast(torch.device("cpu"), dtype):
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return time.perf_counter() - start


@torch.inference_mode()
def largest_difference(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    out = []
    for kind in KINDS:
        use_activation(model, kind)
        out.append(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state)
    mask = batch["attention_mask"].bool()
    return float((out[0] - out[1])[mask].abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval", type=int, default=128, help="test reviews (the speed block's slice)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16, help="sentitune's train.eval_batch_size default")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", metavar="NAME", help="put the table into docs/PERFORMANCE.md under NAME")
    args = parser.parse_args()
    from transformers import GPT2Model

    folder = gpt2_124m_random()
    # the speed benchmark's data settings: the same test reviews
    cfg = experiment(speed_args(eval=args.eval, max_length=args.max_length), folder)
    tokenizer = load_tokenizer(folder)
    test = encode(load_splits(cfg.data, cfg.train.seed).test, tokenizer, **encoding_args(cfg.data, True))
    batches = list(iterate(test, sorted_batches(test.lengths(), args.batch_size), tokenizer.pad_token_id))
    dtype = pick_precision("auto", torch.device("cpu"))
    model = GPT2Model.from_pretrained(folder).eval()
    difference = largest_difference(model, batches[len(batches) // 2])  # fp32, a mid-length batch
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    for _ in range(args.rounds):
        for kind in KINDS:
            use_activation(model, kind)
            times[kind].append(forward_seconds(model, batches, dtype))
    best = {k: min(v) for k, v in times.items()}
    rows = [f"{len(test)} test reviews, {test.num_tokens():,} tokens, max length {args.max_length}, sorted batches of "
            f"{args.batch_size}, {precision_name(dtype)}; GPT-2-size GPT-2 (random weights), whole forward pass; "
            f"fastest of {args.rounds} interleaved rounds", "",
            "| activation | forward (s) | reviews/s | every round (s) |", "|---|---:|---:|---|"]
    for kind in KINDS:
        rows.append(f"| `{kind}` | {best[kind]:.2f} | {len(test) / best[kind]:.2f} | "
                    f"{', '.join(f'{t:.2f}' for t in times[kind])} |")
    rows += ["", f"fused / own: {best['gelu_new'] / best['gelu_pytorch_tanh']:.2f}x faster; largest difference of the "
             f"final hidden states (fp32, one batch): {difference:.1e}", "",
             f"Machine: {cpu_name()}, {torch.get_num_threads()} threads."]
    publish("\n".join(rows), ROOT / "docs" / "PERFORMANCE.md", args.write)


if __name__ == "__main__":
    main()
