"""Model cards: the README.md written into a saved model folder and into an export.

Why a card: a folder copied away from its run must still say what it is (base model, method, classes,
the preprocessing its numbers depend on, its test metrics) and how to load it, with sentitune and
without. The YAML front matter is the hub's model-card metadata, so a pushed folder is indexed right.
"""

from __future__ import annotations

from typing import Any

_FLOAT_METRICS = ("accuracy", "macro_f1", "f1", "precision", "recall", "roc_auc", "loss")


def front_matter(meta: dict[str, Any], pipeline_tag: str = "text-classification") -> str:
    base = meta.get("base")
    lines = ["---", "library_name: " + ("transformers" if meta.get("format") == "hf" else "sentitune"),
             f"pipeline_tag: {pipeline_tag}", "tags:", "- sentiment-analysis", "- sentitune"]
    if isinstance(base, str) and "/" in base and not base.startswith("/"):
        lines.append(f"base_model: {base}")
    return "\n".join([*lines, "---", ""])


def metrics_table(metrics: dict[str, Any] | None) -> str:
    """The run's test metrics as a markdown table ('' when the run kept no test metrics)."""
    test = (metrics or {}).get("test") or {}
    rows = [(k, test[k]) for k in _FLOAT_METRICS if isinstance(test.get(k), int | float)]
    if not rows:
        return ""
    size = test.get("n") or test.get("examples")
    head = f"Test metrics of the run{f' ({size} examples)' if size else ''}:\n\n| metric | value |\n|---|---|\n"
    return head + "".join(f"| {k} | {v:.4f} |\n" for k, v in rows)


def preprocessing_lines(meta: dict[str, Any]) -> list[str]:
    pre = meta.get("preprocessing") or {}
    lines = [f"- classes, in logit order: {', '.join(meta.get('labels') or [])}"]
    if pre:
        side = {"head": "the first tokens", "tail": "the last tokens"}.get(pre.get("truncation", ""),
                                                                           f"{pre.get('truncation')} tokens")
        windows = pre.get("windows") or 1
        if windows > 1:
            stride = pre.get("window_stride")
            lines.append(f"- a review read as up to {windows} windows of {pre.get('max_length')} tokens (special "
                         f"tokens on each), {f'starting every {stride} tokens' if stride else 'not overlapping'}; a "
                         f"longer review keeps its first {windows - 1} and its last window; the windows' logits "
                         f"pooled by {meta.get('window_pooling', 'mean')}")
        else:
            lines.append(f"- at most {pre.get('max_length')} tokens per review (special tokens included), keeping "
                         f"{side}")
        if pre.get("clean_html"):
            lines.append("- HTML line breaks (`<br />`) replaced by spaces and runs of spaces squeezed, before "
                         "tokenizing")
    lines.append(f"- pooling: {meta.get('pooling')} of the backbone's last hidden states; head: dropout + linear")
    return lines


def model_card(meta: dict[str, Any], metrics: dict[str, Any] | None) -> str:
    """The card of a sentitune model folder (model/ of a run)."""
    config = meta.get("config") or {}
    method = (config.get("method") or {}).get("name", "?")
    weights = {"adapter": "a PEFT LoRA adapter (`adapter/`) on the base model",
               "backbone": "a fine-tuned transformers backbone (`backbone/`)",
               "base": "the base model, untouched"}.get(meta.get("weights", ""), meta.get("weights", ""))
    packaged = f" (loaded offline from sentitune's packaged copy `{meta['packaged']}`)" if meta.get("packaged") else ""
    parts = [
        front_matter(meta),
        f"# {config.get('name') or 'sentitune classifier'}\n",
        f"A {len(meta.get('labels') or [])}-class sentiment classifier trained with "
        f"sentitune {meta.get('sentitune_version', '')}: method `{method}` "
        f"on `{meta.get('base')}`{packaged}. Weights: {weights}, plus a linear head (`head.safetensors`).\n",
        _ensemble_line(meta),
        metrics_table(metrics),
        "## Preprocessing (what the predictions depend on)\n",
        "\n".join(preprocessing_lines(meta)) + "\n",
        "All of it is recorded in `sentitune.json` (`preprocessing`, and the run's whole `config`).\n",
        "## Use\n",
        "```bash\nsentitune predict path/to/this/folder \"A quietly brilliant film.\"\n"
        "sentitune export path/to/this/folder --format hf --out my-model   # plain transformers, no sentitune\n```\n",
    ]
    return "\n".join(p for p in parts if p)


def _ensemble_line(meta: dict[str, Any]) -> str:
    """An ensemble run answers with the transformer and an n-gram model together: say so, with the weights."""
    ensemble = meta.get("ensemble")
    if not isinstance(ensemble, dict):
        return ""
    w = ensemble.get("weights") or {}
    return (f"An **ensemble**: the transformer's log-probabilities (weight {w.get('transformer', 0):.3g}) plus those "
            f"of an n-gram model in `{ensemble.get('ngram', 'ngram')}/` (weight {w.get('ngram', 0):.3g}), weights "
            "fitted on validation. `sentitune predict` / `serve` answer with both; an export holds the transformer "
            "only, so sentitune refuses to export it.\n")


def _scorer_section(record: dict[str, Any]) -> str:
    """How to score as the run does with the folder's sentitune_scorer.py (export/portable.py), when it has one."""
    scorer = record.get("scorer")
    if not scorer:
        return ""
    folder = "path/to/this/folder"
    steps = "clean-up, the run's cut of long reviews" + (", the n-gram half" if record.get("ensemble") else "")
    return (f"## As the run answers: `{scorer}` (numpy, onnxruntime, tokenizers; no torch, no sentitune)\n\n"
            f"```bash\npython {scorer} {folder} \"A quietly brilliant film.\"   # one JSON line per text\n```\n\n"
            f"```python\nimport sys\nsys.path.insert(0, \"{folder}\")\nfrom sentitune_scorer import Scorer\n\n"
            f"probs = Scorer(\"{folder}\").probabilities([\"A quietly brilliant film.\"])  # [n, classes]\n```\n\n"
            f"It does every step above ({steps}); checked against sentitune on the export's probe reviews: largest "
            f"difference {record['check'].get('scorer_max_probability_difference', 0):.1e}.\n")


def onnx_card(record: dict[str, Any], metrics: dict[str, Any] | None) -> str:
    """The card of an `export --format onnx` folder: how to run the graph with onnxruntime alone."""
    pre = record.get("preprocessing") or {}
    graph = record.get("graph", "model.onnx")
    pair = record.get("input") == "text_pair"
    call = ('tokenizer(["The food was great but the service was slow."], ["service"], truncation="only_first", '
            'padding=True, return_tensors="np")' if pair else
            'tokenizer(["A quietly brilliant film."], truncation=True, padding=True, return_tensors="np")')
    caveats = []
    scorer = record.get("scorer")
    if pre.get("truncation") == "head+tail":
        head = f"{pre['head_tokens']} tokens" if pre.get("head_tokens") else "quarter of its token budget"
        caveats.append(f"- The run read a long review as its first {head} and its last tokens, up to max_length "
                       "(head+tail); a tokenizer truncates one end only: " + (
                           f"`{scorer}` cuts the ids as the run did (its `truncate_ids`)." if scorer else
                           "cut the ids yourself to match."))
    if record.get("ensemble"):
        weights = record["ensemble"]["weights"]
        caveats.append(f"- An ensemble: the graph's log-probabilities x {weights['transformer']:.3f} plus those of the "
                       f"n-gram model in `{record['ensemble']['ngram']}/` x {weights['ngram']:.3f}, then a softmax; "
                       f"`{scorer}` computes both (the n-gram model in numpy, from its vocabulary and arrays).")
    if record.get("target_input") in ("markers", "prompt"):
        caveats.append("- The run showed the target as " + str(record.get("target_input")) + " (see `preprocessing` "
                       "in sentitune.json); build the same text before tokenizing.")
    quantized = (f" Weights are int8 (ONNX Runtime dynamic quantization): probabilities differ from the fp32 model's "
                 f"by up to {record['check']['max_probability_difference']:.3f} on the export check."
                 if record.get("quantize") else "")
    parts = [
        front_matter({**record, "format": "onnx"}),
        "# Sentiment classifier (ONNX, exported by sentitune)\n",
        f"`{graph}`: the classifier of a sentitune {record.get('sentitune_version', '')} run on "
        f"`{record.get('base')}` (backbone, {record.get('pooling')} pooling, linear head; LoRA merged) as one ONNX "
        f"graph. Inputs `input_ids`, `attention_mask` (int64, [batch, sequence]); outputs `logits` and "
        f"`probabilities` ([batch, classes]: {', '.join(record.get('labels') or [])}).{quantized}\n",
        metrics_table(metrics),
        "## Use (onnxruntime and a tokenizer; no torch, no sentitune)\n",
        "```python\nimport numpy as np, onnxruntime as ort\nfrom transformers import AutoTokenizer\n\n"
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")\n'
        f'session = ort.InferenceSession("path/to/this/folder/{graph}")\n'
        f"batch = {call}\n"
        'probs = session.run(["probabilities"], {k: batch[k].astype(np.int64) for k in ("input_ids", '
        '"attention_mask")})[0]\n```\n',
        "The tokenizer carries the run's `model_max_length`, `truncation_side` and (as normalizers) its HTML clean-up; "
        "pad on the right.\n",
        "## Preprocessing\n",
        "\n".join([*preprocessing_lines(record), *caveats]) + "\n",
        _scorer_section(record),
    ]
    return "\n".join(p for p in parts if p)


def _usage(pair: bool) -> str:
    if pair:
        return ("A target-dependent classifier: give the sentence and the target as a pair; only the sentence is "
                "truncated.\n\n```python\nfrom transformers import pipeline\n\n"
                "classify = pipeline(\"text-classification\", model=\"path/to/this/folder\", "
                "truncation=\"only_first\", top_k=None)\n"
                "classify({\"text\": \"The food was great but the service was slow.\", \"text_pair\": \"service\"})"
                "\n```\n")
    return ("```python\nfrom transformers import pipeline\n\n"
            "classify = pipeline(\"text-classification\", model=\"path/to/this/folder\", truncation=True, top_k=None)\n"
            "classify(\"A quietly brilliant film.\")\n```\n")


def hf_card(record: dict[str, Any], metrics: dict[str, Any] | None, architecture: str) -> str:
    """The card of an hf export (export/hf.py): a plain transformers model, its use, how its head is written."""
    max_length = (record.get("preprocessing") or {}).get("max_length")
    labels = record.get("labels") or []
    parts = [
        front_matter({**record, "format": "hf"}),
        "# Sentiment classifier (exported by sentitune)\n",
        f"A plain transformers `{architecture}` with classes {', '.join(labels)}, exported by sentitune "
        f"{record['sentitune_version']} from a classifier on `{record.get('base')}`. It loads with transformers "
        "alone (no sentitune, no remote code).\n",
        metrics_table(metrics),
        "## Use\n",
        _usage(record.get("input") == "text_pair"),
        f"Pass `truncation=True`: the tokenizer's `model_max_length` ({max_length}) and `truncation_side` are the "
        "run's. The tokenizer's normalizer does sentitune's HTML clean-up (`<br />` to spaces).\n",
        "## Preprocessing\n",
        "\n".join(preprocessing_lines(record)) + "\n",
        "## How the head is written (exactly, in a standard architecture)\n",
        f"sentitune pools with `{record.get('pooling')}` pooling and applies a linear head. The export writes that "
        "computation into the architecture's own head (tanh units used in their linear range with a Richardson "
        "correction; mean pooling as one extra encoder layer with uniform attention; a GPT-2 head bias moved into "
        "the final layer norm). Logits may differ from sentitune's by a shift common to all classes; probabilities "
        f"agree (max difference on the export check: {record['check']['max_probability_difference']:.1e}). "
        "Load it in float32 (the default): the extra layer's weights are large by design.\n",
    ]
    return "\n".join(p for p in parts if p)
