"""The command line's grammar: every command, its flags and its --help (argparse, one-line usage errors)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

EXAMPLES = """examples:
  sentitune train --config configs/experiments/quickstart.yaml
  sentitune train --config configs/experiments/minilm-lora-quickstart.yaml --ngram-ensemble
  sentitune train --model minilm --method lora --train-size 4000 --eval-size 2000 --out runs/minilm-lora
  sentitune train --model gpt2 --method partial --set method.freeze_layers=10 --out runs/gpt2-partial
  sentitune evaluate runs/minilm-lora --split test
  sentitune predict runs/minilm-lora "A wonderful film." "Two hours I will never get back."
  sentitune serve runs/minilm-lora --port 8000
  sentitune models
  sentitune bench my-bench.yaml --out runs/bench/mine
  sentitune report runs/bench/mine
  sentitune search configs/searches/minilm-lora-lr.yaml --trials 12
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
    ("--method", "method.name", str, "probe | partial | full | lora | two-phase | contrastive | zero-shot | tfidf"),
    ("--data", "data.path", str,
     "IMDb archive or extracted aclImdb/ folder (default: $SENTITUNE_IMDB, cache, download)"),
    ("--source", "data.source", str, "imdb, hf:NAME[:CONFIG] (a Hugging Face dataset), a Parquet file or "
                                     "save_to_disk folder, or a CSV/JSONL file of text,label"),
    ("--text-column", "data.text_column", str, "the text's column in a file or dataset (default: text)"),
    ("--label-column", "data.label_column", str, "the label's column in a file or dataset (default: label)"),
    ("--train-size", "data.train_size", int, "stratified subsample of the training pool"),
    ("--val-size", "data.val_size", float, "validation carved from train: fraction (<1) or count"),
    ("--eval-size", "data.eval_size", int, "stratified subsample of the test split"),
    ("--max-length", "data.max_length", int, "tokens per review, special tokens included"),
    ("--truncation", "data.truncation", str, "head | tail | head+tail"),
    ("--windows", "data.windows", int, "read a long review as up to N windows of --max-length, logits pooled"),
    ("--epochs", "train.epochs", float, "epochs (fractions allowed)"),
    ("--min-steps", "train.min_steps", int, "each phase trains at least this many optimizer steps (more epochs on "
                                            "small data; 0: epochs alone decide)"),
    ("--lr", "train.lr", float, "peak learning rate"),
    ("--batch-size", "train.batch_size", int, "training batch size"),
    ("--seed", "train.seed", int, "seed for data splits, initialisation and batch order"),
    ("--teacher", "self_train.teacher", str, "self-training: a causal LM (e.g. smollm2-135m) labels --unlabeled "
                                             "reviews; its surest labels train this run too"),
    ("--unlabeled", "data.unlabeled", str, "unlabelled reviews for --teacher: unsup (IMDb train/unsup), pool "
                                           "(training reviews not drawn, labels hidden) or a .txt/CSV/JSONL file"),
]


def positive(value: str) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sentitune",
        description="Fine-tune and benchmark pretrained transformers for sentiment classification.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_zero_shot(sub)
    _add_export(sub)
    _add_serve(sub)
    _add_models(sub)
    _add_bench(sub)
    _add_report(sub)
    _add_search(sub)
    return parser


def _add_train(sub: Any) -> None:
    """`sentitune train`: a run of any kind from a config and flags."""
    t = sub.add_parser("train", help="train a classifier and evaluate it on test", epilog=EXAMPLES + TRAIN_SCALING,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--config", help="experiment YAML (see configs/experiments/); flags and --set override it")
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


def _add_evaluate(sub: Any) -> None:
    """`sentitune evaluate`: a saved run on a split."""
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


def _add_predict(sub: Any) -> None:
    """`sentitune predict`: new reviews with a saved run."""
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
    p.add_argument("--batch-size", type=positive, default=32,
                   help="reviews per forward pass (default 32; a zero-shot run scores its prompts 8 at a time)")
    p.add_argument("--chunk-size", type=positive, default=2048,
                   help="reviews read, predicted (in batches sorted by length) and written at a time, so memory "
                        "stays constant whatever the file's size (default 2048)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (shown only when stderr is a terminal)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"],
                   help="compute in this precision (default: the one the run saved: fp32 gives the same "
                        "probabilities on any CPU and in any batch; bf16 is faster on CPUs that have it)")
    _onnx_flags(p)


def _add_zero_shot(sub: Any) -> None:
    """`sentitune zero-shot`: prompting a causal LM."""
    z = sub.add_parser("zero-shot", help="zero-/few-shot sentiment with a causal LM (label-word likelihoods)")
    z.add_argument("--config", help="experiment YAML with a zero_shot section; flags and --set override it")
    for flag, key, typ, text in ZERO_SHOT_FLAGS:
        z.add_argument(flag, dest=key, type=typ, help=f"{text} [{key}]")
    z.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set zero_shot.review_tokens=128 (repeatable)")
    z.add_argument("--out", help="run directory (default: runs/<name>)")
    z.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    z.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_export(sub: Any) -> None:
    """`sentitune export`: a run for tools without sentitune."""
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


def _add_serve(sub: Any) -> None:
    """`sentitune serve`: a run over HTTP."""
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


def _add_models(sub: Any) -> None:
    """`sentitune models`: the offline packaged models."""
    sub.add_parser("models", help="list the offline packaged models")


def _add_bench(sub: Any) -> None:
    """`sentitune bench`: a matrix of runs."""
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


def _add_report(sub: Any) -> None:
    """`sentitune report`: a bench's HTML page."""
    r = sub.add_parser("report", help="write a bench's self-contained HTML report (tables + plots)",
                       description="Draw the bench's plots (BENCH_DIR/plots/*.png: ROC curves, accuracy vs trainable "
                       "parameters and vs training time, training/validation loss, accuracy by review length) and "
                       "write one HTML file with sortable tables and the plots embedded: it opens from disk, with "
                       "no server and nothing beside it. `sentitune bench` writes it too when it ends.")
    r.add_argument("bench_dir", type=Path, help="a bench's output folder (its --out, with results.json)")
    r.add_argument("--output", type=Path, help="the HTML file (default: BENCH_DIR/report.html)")


def _add_search(sub: Any) -> None:
    """`sentitune search`: Optuna trials, then the best on test."""
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
