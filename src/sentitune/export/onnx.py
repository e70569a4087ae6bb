"""A trained classifier as an ONNX graph (fp32, or int8 dynamic-quantized), and ONNX Runtime to score with it.

The graph is the classifier's own forward (backbone, pooling from the mask, head; a decoder's position ids
counted from the mask), LoRA merged into the base weights, traced by torch.onnx.export:

    inputs   input_ids [batch, sequence] int64, attention_mask [batch, sequence] int64 (1 = token, 0 = pad)
    outputs  logits [batch, num_logits] fp32, probabilities [batch, classes] fp32 (softmax; a one-logit
             binary head gives [1 - p, p])

Why: ONNX Runtime runs it without torch or sentitune (any language with an ORT binding), and its int8
dynamic quantization makes CPU inference faster for a small change in the probabilities
(benchmarks/onnx_speed.py, docs/PERFORMANCE.md). A run's graphs are cached in RUN/model/onnx/KEY/, KEY a hash
of the saved model's files, so a retrained or edited model never reuses a stale graph.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sentitune.atomic import write_atomic
from sentitune.config import ConfigError
from sentitune.data.batching import Encoded, iterate, sorted_batches
from sentitune.errors import RunError
from sentitune.extras import require
from sentitune.models.classifier import SentimentClassifier
from sentitune.models.saving import MODEL_META
from sentitune.paths import ensure_writable_dir
from sentitune.runtime import cores

INPUTS = ("input_ids", "attention_mask")
OUTPUTS = ("logits", "probabilities")
QUANTIZE = ("int8",)
ONNX_DIR = "onnx"  # inside a run's model folder: RUN/model/onnx/KEY/model.onnx, model.int8.onnx
# Part of the cache key: bump it when the graph or the quantization settings change, so old graphs are redone.
FORMAT = "1: merged LoRA, opset default, int8 = quantize_dynamic QInt8 per-channel"
_MAX_BYTES = 2 * 1024**3 - 64 * 1024**2  # a single-file ONNX graph (protobuf) holds under 2 GiB


class _Graph(nn.Module):
    """What the graph computes: the classifier's logits (its own forward) and the probability of each class."""

    def __init__(self, model: SentimentClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(input_ids, attention_mask).float()
        if self.model.num_logits == 1:
            positive = torch.sigmoid(logits)
            return logits, torch.cat([1 - positive, positive], dim=1)
        return logits, torch.softmax(logits, dim=-1)


def _exportable(model: SentimentClassifier) -> SentimentClassifier:
    """An fp32 copy in eval mode with a LoRA adapter merged into its base weights (the same function, one
    MatMul per projection: faster, and what int8 quantization expects); the caller's model is left as it is."""
    out = copy.deepcopy(model).cpu().float().eval()
    if callable(getattr(out.backbone, "merge_and_unload", None)):
        out.backbone = out.backbone.merge_and_unload()
    return out


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Python warnings and `logger`'s warnings off for the block: what the exporter (torchvision ops it skips,
    deprecations) and the quantizer (advice to pre-process) report says nothing a user can act on."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def onnx_graph(model: SentimentClassifier) -> Any:
    """The classifier as a checked onnx.ModelProto (dynamic batch and sequence axes), with its class names,
    number of logits and pooling in the graph's metadata."""
    import onnx
    from torch.export import Dim

    nbytes = sum(p.numel() * 4 for p in model.parameters())
    if nbytes > _MAX_BYTES:
        raise ConfigError(f"ONNX export: the model's fp32 weights take {nbytes / 1024**3:.1f} GiB; a single-file "
                          "ONNX graph holds under 2 GiB")
    graph = _Graph(_exportable(model)).eval()
    example = torch.tensor([[1, 2, 3, 4], [1, 2, 0, 0]], dtype=torch.long)
    batch, sequence = Dim("batch"), Dim("sequence")
    axes = {name: {0: batch, 1: sequence} for name in INPUTS}
    with _quiet("torch.onnx"), torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(graph, (example, (example > 0).long()), input_names=list(INPUTS),
                                    output_names=list(OUTPUTS), dynamic_shapes=axes, dynamo=True, verbose=False)
    proto = program.model_proto
    meta = {"sentitune.labels": json.dumps(model.labels), "sentitune.num_logits": str(model.num_logits),
            "sentitune.pooling": model.pooling}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto


def export_onnx(model: SentimentClassifier, dest: Path, quantize: str | None = None) -> Path:
    """Write the classifier as an fp32 ONNX graph at `dest` (atomically); with quantize="int8" also an
    int8 dynamic-quantized copy next to it (int8_path(dest)), whose path is returned then."""
    import onnx

    check_quantize(quantize)
    dest = Path(dest)
    proto = onnx_graph(model)
    write_atomic(dest, lambda tmp: onnx.save_model(proto, str(tmp)))
    return quantize_int8(dest, int8_path(dest)) if quantize == "int8" else dest


def check_quantize(quantize: str | None) -> None:
    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"quantize: {quantize!r} is not one of none, {', '.join(QUANTIZE)}")


GRAPH_NAME = "model.onnx"  # the fp32 graph in an export folder and in a run's ONNX cache


def int8_path(fp32: Path) -> Path:
    """Where the int8 copy of the graph at `fp32` goes: model.onnx -> model.int8.onnx."""
    return fp32.with_name(f"{fp32.stem}.int8{fp32.suffix}")


def quantize_int8(source: Path, dest: Path) -> Path:
    """int8 dynamic quantization of the graph at `source` into `dest` (atomically): weights stored as int8
    with one scale per output channel, activations quantized per batch at run time; no calibration data.

    QInt8 weights, one scale per channel: per-channel scales keep accuracy (per-tensor ones moved probabilities
    2-3x more), and QInt8 is as accurate as QUInt8 but faster where the CPU has VNNI (u8 x s8 products);
    measured with benchmarks/onnx_speed.py --compare-quantization (docs/PERFORMANCE.md).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def write(tmp: Path) -> None:
        with _quiet(""):  # the quantizer logs on the root logger
            quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, per_channel=True)

    write_atomic(dest, write)
    return dest


# ------------------------------------------------------------------------------------ a run's cached graphs


def model_key(model_dir: Path) -> str:
    """A hash of every file of the saved model (the ONNX cache aside) and of FORMAT: a retrained, edited or
    replaced model, or a new export format, gets a new key, so a stale graph is never used. (An adapter or
    head-only run names its base model in sentitune.json, which is hashed; the base's own files are not.)"""
    digest = hashlib.sha256(FORMAT.encode())
    model_dir = Path(model_dir)
    files = sorted(f for f in model_dir.rglob("*") if f.is_file() and f.relative_to(model_dir).parts[0] != ONNX_DIR)
    for file in files:
        digest.update(f"\0{file.relative_to(model_dir).as_posix()}\0".encode())
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def run_graph(model_dir: Path, model: SentimentClassifier | Callable[[], SentimentClassifier],
              quantize: str | None = None) -> Path:
    """The graph of the model saved in `model_dir`, exported (and quantized) the first time it is asked for,
    into MODEL/onnx/KEY/; `model` is that model loaded (or a function that loads it, called only on a miss)."""
    check_quantize(quantize)
    model_dir = Path(model_dir)
    if not (model_dir / MODEL_META).is_file():
        raise RunError(f"{model_dir}: no saved model ({MODEL_META} missing)")
    key = model_key(model_dir)
    folder = model_dir / ONNX_DIR / key
    fp32 = folder / GRAPH_NAME
    wanted = int8_path(fp32) if quantize == "int8" else fp32
    if wanted.is_file():
        return wanted
    ensure_writable_dir(folder)  # fail now, not after the export
    if not fp32.is_file():
        export_onnx(model() if callable(model) and not isinstance(model, nn.Module) else model, fp32)
        _drop_stale(model_dir / ONNX_DIR, keep=key)
    if quantize == "int8":
        quantize_int8(fp32, wanted)
    return wanted


def _drop_stale(root: Path, keep: str) -> None:
    """Graphs of an earlier version of the model folder (edited in place) can never be used again."""
    for entry in root.iterdir():
        if entry.name != keep and entry.is_dir() and re.fullmatch(r"[0-9a-f]{16}", entry.name):
            shutil.rmtree(entry, ignore_errors=True)


# ------------------------------------------------------------------------------------ scoring with ONNX Runtime


class OnnxScorer:
    """An ONNX Runtime session over a classifier graph: what evaluation.score gives for the torch model
    (positive-class probabilities [n] for two classes, every class's [n, classes] for more, and the mean
    loss), so evaluate and predict can use either."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        require("onnx", f"{path}: scoring an ONNX graph", only=("onnxruntime",))
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cores()  # ORT's default counts the machine's cores, not ours
        options.inter_op_num_threads = 1
        # Threads that spin while waiting for work take CPU from the working ones on a shared 2-core machine:
        # a MiniLM batch ran faster with spinning off (fp32 and int8 alike, measured here).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: its warnings (e.g. unused initializers) are not the user's
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile classes
            detail = " ".join(str(e).split())[:160]
            cached = self.path.parent.parent.name == ONNX_DIR  # a run's cache: exported again once removed
            hint = f" — delete {self.path.parent} to export it again" if cached else ""
            raise RunError(f"{path}: cannot load the ONNX graph ({type(e).__name__}: {detail}){hint}") from e
        meta = self.session.get_modelmeta().custom_metadata_map
        self.labels: list[str] = json.loads(meta.get("sentitune.labels", '["negative", "positive"]'))
        self.num_logits = int(meta.get("sentitune.num_logits", len(self.labels)))

    @property
    def num_classes(self) -> int:
        return max(2, self.num_logits)

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, probabilities) of one padded batch."""
        feed = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
        logits, probabilities = self.session.run(list(OUTPUTS), feed)
        return logits, probabilities

    def score(self, data: Encoded, batch_size: int, pad_id: int, desc: str = "onnx",
              progress: bool = False) -> tuple[np.ndarray, float]:
        """Probabilities in `data` order and the mean loss, batched longest first as evaluation.score does."""
        from tqdm.auto import tqdm

        binary = self.num_classes == 2
        scores = np.zeros((len(data),) if binary else (len(data), self.num_classes), dtype=np.float64)
        total_loss = 0.0
        batches = sorted_batches([len(x) for x in data.input_ids], batch_size)
        for batch in tqdm(iterate(data, batches, pad_id), total=len(batches), desc=desc, disable=not progress,
                          leave=False, unit="batch"):
            logits, probabilities = self.run(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
            labels = batch["labels"].numpy()
            total_loss += float(_losses(logits, labels).sum())
            scores[batch["index"].numpy()] = probabilities[:, 1] if binary else probabilities
        return scores, total_loss / max(1, len(data))


def _losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example loss as SentimentClassifier.loss defines it: binary cross-entropy on one logit, cross-entropy
    on several (computed from the logits, in float64)."""
    z = logits.astype(np.float64)
    if z.shape[1] == 1:
        return np.logaddexp(0.0, np.where(labels == 1, -z[:, 0], z[:, 0]))
    return np.logaddexp.reduce(z, axis=1) - z[np.arange(len(z)), labels]


# ------------------------------------------------------------------------------ sentitune export --format onnx

SCORER_FILE = "sentitune_scorer.py"  # export/portable.py, copied: the folder scores reviews as the run does


def add_scorer(folder: Path, record: dict[str, Any], portable: dict[str, Any], quantize: str | None
               ) -> dict[str, Any]:
    """Put the scorer (and an ensemble's n-gram model) into an export being written, and check it: its
    probabilities on the scorer probes, computed from the folder alone, against sentitune's predict (the run's
    truncation, head+tail included, and the n-gram half). fp32 within 1e-5, or the export is not written."""
    import inspect

    from sentitune.ensemble import NGRAM_FOLDER
    from sentitune.export.common import MAX_DIFF, SCORER_PROBES
    from sentitune.export.portable import Scorer

    shutil.copyfile(str(inspect.getsourcefile(Scorer)), folder / SCORER_FILE)
    record = {**record, "scorer": SCORER_FILE, "pad_token_id": portable["pad_token_id"]}
    if portable["ensemble"]:
        shutil.copytree(Path(portable["model_dir"]) / NGRAM_FOLDER, folder / NGRAM_FOLDER)
        record["ensemble"] = {"weights": portable["ensemble"]["weights"], "ngram": NGRAM_FOLDER}
    (folder / MODEL_META).write_text(json.dumps(record, indent=2))
    got = Scorer(folder).probabilities(list(SCORER_PROBES))
    diff = float(np.abs(got - portable["expected"]).max())
    if quantize is None and not diff <= MAX_DIFF:
        raise RunError(f"export: {SCORER_FILE}'s probabilities differ from sentitune's by {diff:.2e} (> {MAX_DIFF:g}) "
                       "on the probe reviews; not written")
    record["check"] = {**record["check"], "scorer_probe_reviews": len(SCORER_PROBES),
                       "scorer_max_probability_difference": diff}
    return record



def export_onnx_folder(model: SentimentClassifier, tokenizer: Any, meta: dict[str, Any], dest: Path,
                       metrics: dict[str, Any] | None = None, quantize: str | None = None,
                       portable: dict[str, Any] | None = None) -> dict[str, Any]:
    """A folder ONNX Runtime users load without sentitune: the graph (model.onnx, or model.int8.onnx), the
    tokenizer with the run's limits and HTML clean-up (as for --format hf), sentitune.json and a model card.

    Checked before it is written: the graph's probabilities on the probe reviews, tokenized by the folder's own
    tokenizer, against sentitune's; fp32 must agree within 1e-5, int8's difference is recorded.
    """
    import onnxruntime as ort

    from sentitune.atomic import atomic_dir
    from sentitune.export.common import MAX_DIFF, PROBE_TEXTS, export_record, sentitune_probabilities, write_tokenizer
    from sentitune.models.card import onnx_card

    check_quantize(quantize)
    pre = meta.get("preprocessing") or {}
    model = model.float().eval()
    with atomic_dir(Path(dest)) as tmp:
        exported_tokenizer = write_tokenizer(tokenizer, tmp, pre)
        graph = export_onnx(model, tmp / GRAPH_NAME, quantize)
        if graph.name != GRAPH_NAME:
            (tmp / GRAPH_NAME).unlink()  # the int8 folder holds the int8 graph only
        batch = exported_tokenizer(list(PROBE_TEXTS), padding=True, truncation=True, return_tensors="np")
        expected = sentitune_probabilities(model, batch)
        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        feed = {name: np.asarray(batch[name], dtype=np.int64) for name in INPUTS}
        got = session.run(["probabilities"], feed)[0].astype(np.float64)
        diff = float(np.abs(got - expected).max())
        if quantize is None and not diff <= MAX_DIFF:
            raise RunError(f"export: the ONNX graph's probabilities differ from sentitune's by {diff:.2e} "
                           f"(> {MAX_DIFF:g}) on the probe reviews; not written")
        record = {**export_record(meta, "onnx", len(PROBE_TEXTS), diff), "graph": graph.name, "quantize": quantize,
                  "inputs": list(INPUTS), "outputs": list(OUTPUTS)}
        (tmp / MODEL_META).write_text(json.dumps(record, indent=2))
        if portable is not None:
            record = add_scorer(tmp, record, portable, quantize)
            (tmp / MODEL_META).write_text(json.dumps(record, indent=2))
        (tmp / "README.md").write_text(onnx_card(record, metrics), encoding="utf-8")
    return record
