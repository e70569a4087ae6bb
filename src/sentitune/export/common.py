"""What every export shares: its error, the probe reviews it is checked on and the tolerance, sentitune's own
probabilities to check against, the exported tokenizer (HTML clean-up as normalizers) and the sentitune.json
record. One module, so the transformers folder and the ONNX graph are checked and described alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentitune import __version__
from sentitune.config import ExperimentConfig
from sentitune.data.batching import encode, encoding_args
from sentitune.data.records import Example
from sentitune.data.text import clean_text
from sentitune.ensemble import NgramMember
from sentitune.errors import ModelError
from sentitune.evaluation import score
from sentitune.models.classifier import SentimentClassifier
from sentitune.models.registry import is_decoder
from sentitune.models.saving import save_tokenizer

MAX_DIFF = 1e-5  # an export whose probabilities differ more from sentitune's is not written

PROBE_TEXTS = [
    "A quietly brilliant film: the cast is superb and the ending stayed with me for days.",
    "Dull, predictable and far too long.<br /><br />I wanted my two hours back.",
    "Not bad.",
    "The first half drags, the second half is wonderful, and the score is the best thing in it " * 6,
]


# The scorer an ONNX folder carries is checked on these too: one review long enough (~600 tokens) that every
# truncation (head, tail, head+tail) cuts it.
SCORER_PROBES = [*PROBE_TEXTS, "What starts as a slow, careful portrait turns into something else. " * 40
                 + "In the end I loved it."]


class ExportError(ModelError):
    """The classifier has no exact form in the requested format (says which format does)."""


@torch.no_grad()
def sentitune_probabilities(model: SentimentClassifier, batch: Any) -> Any:
    """sentitune's class probabilities (float64 numpy) for a tokenized batch (numpy or torch arrays)."""
    ids, mask = (torch.as_tensor(batch[name]).long() for name in ("input_ids", "attention_mask"))
    return probabilities(model.eval()(ids, mask).float(), model.num_logits).numpy()


def pipeline_probabilities(model: SentimentClassifier, tokenizer: Any, cfg: ExperimentConfig,
                           member: NgramMember | None, texts: list[str]) -> np.ndarray:
    """[n, classes] probabilities as `sentitune predict` gives them: the HTML clean-up, the run's truncation, the
    model in fp32, and an ensemble's n-gram half added. What an exported scorer must reproduce."""
    examples = [Example(id=str(i), text=clean_text(t) if cfg.data.clean_html else t, label=0)
                for i, t in enumerate(texts)]
    data = encode(examples, tokenizer, **encoding_args(cfg.data, is_decoder(model.backbone.config)))
    scores = score(model.float().eval(), data, cfg.train.eval_batch_size, tokenizer.pad_token_id, None)[0]
    if member is not None:
        scores = member.combine(scores, examples)
    return np.column_stack([1 - scores, scores]) if scores.ndim == 1 else scores


def probabilities(logits: torch.Tensor, num_logits: int) -> torch.Tensor:
    if num_logits == 1:
        p = torch.sigmoid(logits[:, 0].double())
        return torch.stack([1 - p, p], 1)
    return torch.softmax(logits.double(), -1)


def write_tokenizer(tokenizer: Any, folder: Path, pre: dict[str, Any]) -> Any:
    """An export's tokenizer (the run's limits, the HTML clean-up as normalizers), and that tokenizer as a user
    loads it back from `folder`: the one the export is checked with."""
    from transformers import AutoTokenizer

    save_tokenizer(tokenizer, folder, pre.get("max_length"), pre.get("truncation"))
    portable_tokenizer(folder, bool(pre.get("clean_html")))
    return AutoTokenizer.from_pretrained(folder)


def export_record(meta: dict[str, Any], fmt: str, probes: int, diff: float) -> dict[str, Any]:
    """What every export's sentitune.json says: where it came from, its classes and preprocessing, its check."""
    return {
        "format": fmt, "sentitune_version": __version__, "exported_from": meta.get("source_run"),
        **{key: meta.get(key) for key in ("base", "packaged", "base_weights", "labels", "pooling", "preprocessing",
                                          "target_input")},
        "input": "text_pair" if meta.get("has_targets") else "text",  # target-dependent: (sentence, target)
        "check": {"probe_reviews": probes, "max_probability_difference": diff},
    }


def portable_tokenizer(folder: Path, clean_html: bool) -> None:
    """Make tokenizer.json the whole tokenizer, with sentitune's clean_text as its first normalizers.

    Why the class: transformers 5's model-specific classes (BertTokenizer...) rebuild their normalizer from
    their own arguments and would drop ours; PreTrainedTokenizerFast runs tokenizer.json as written (and
    reads the special tokens, model_max_length and truncation_side from tokenizer_config.json).
    """
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    if not clean_html:
        return
    tokenizer_json = folder / "tokenizer.json"
    record = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    ours = [
        {"type": "Replace", "pattern": {"Regex": r"(?i)<br\s*/?>"}, "content": " "},
        {"type": "Replace", "pattern": {"Regex": r"[ \t]{2,}"}, "content": " "},
        {"type": "Strip", "strip_left": True, "strip_right": True},
    ]
    existing = record.get("normalizer")
    record["normalizer"] = {"type": "Sequence", "normalizers": ours + ([existing] if existing else [])}
    tokenizer_json.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
