"""A trained classifier as a plain transformers folder: AutoModelForSequenceClassification and
pipeline("text-classification") load it with no sentitune installed and no remote code.

sentitune's classifier is backbone -> pooling (mean | cls | last) -> dropout -> linear head. Each
standard architecture has its own head; the linear map z = W.pooled + b is written into it exactly:

- **tanh heads** (BERT's pooler dense+tanh, RoBERTa's and MPNet's dense+tanh+out_proj): the dense layer
  computes eps*z and 2*eps*z, and out_proj recombines (8 tanh(eps z) - tanh(2 eps z)) / (6 eps) = z + O(eps^4 z^5)
  (a Richardson step cancels tanh's cubic term); eps keeps |eps z| <= 0.01, so the error is ~1e-8 of z.
- **mean pooling** (BERT family), which no transformers classification head does: one extra encoder layer.
  Its query and key weights are zero, so attention is uniform over the real tokens (padding is masked) and
  position 0 receives the mean of the last hidden states; its output projection writes +-lam*(W.mean) and
  large constants +-lam*c, so its residual (the first token's own state, ~1/lam of it) and both layer norms
  (the constants dominate the variance) leave z recoverable as a difference of two coordinates; its
  feed-forward block is zero. Weights are large (lam ~1e7): load the export in float32, the default.
- **last-token pooling** (GPT-2): GPT2ForSequenceClassification pools the last non-pad token itself; its score
  layer has no bias, so the head's bias goes into the final layer norm's bias (delta with W.delta = b up to a
  shift common to all classes, which softmax ignores).
- **last-token pooling** (Llama family: SmolLM2...): LlamaForSequenceClassification pools the last non-pad token,
  but its final RMSNorm has no bias and its score none either. One extra decoder layer computes the logits:
  its attention output is zero, its post-attention norm is the model's final norm (so its MLP sees exactly
  what sentitune's head saw), its MLP (Llama's `mlp_bias` option; zero biases in the other layers) has gate
  units saturated at silu(30) = 30, up units z = W.n + b, and writes +-lam*z and constants +-lam*c into the
  residual; the new final norm (weight 1) then leaves z as a difference of two coordinates, read by the score.

Every export is checked before it is written: the folder's model and sentitune's give the same class
probabilities (max difference recorded in sentitune.json; over 1e-5 is an error).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sentitune.atomic import atomic_dir
from sentitune.export.common import (
    MAX_DIFF,
    PROBE_TEXTS,
    ExportError,
    export_record,
    probabilities,
    write_tokenizer,
)
from sentitune.models.card import hf_card
from sentitune.models.classifier import SentimentClassifier
from sentitune.models.registry import is_decoder
from sentitune.models.saving import MODEL_META

# Architectures whose encoder layers are BERT's (attention.self.{query,key,value}, attention.output.{dense,
# LayerNorm}, intermediate.dense, output.{dense,LayerNorm}; post-layer-norm) and the attribute of the backbone.
BERT_FAMILY = {"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta", "camembert": "roberta"}
TANH_HEAD_TYPES = {"bert", "roberta", "xlm-roberta", "camembert", "mpnet"}
def effective_head(model: SentimentClassifier) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) in float64 with one row per class: a one-logit binary head becomes logits [0, z]."""
    weight, bias = model.head.weight.detach().double(), model.head.bias.detach().double()
    if model.num_logits == 1:
        weight = torch.cat([torch.zeros_like(weight), weight])
        bias = torch.cat([torch.zeros_like(bias), bias])
    return weight, bias


def check_exportable(model_type: str, pooling: str, decoder: bool, truncation: str, target_input: str | None) -> None:
    """Raise ExportError, naming what would work instead, when no exact transformers form exists."""
    if truncation == "head+tail":
        raise ExportError("export --format hf: head+tail truncation has no tokenizer setting (a tokenizer keeps one "
                          "end); use --format onnx with sentitune's preprocessing, or train with data.truncation "
                          "head or tail")
    if target_input not in (None, "pair"):
        raise ExportError(f"export --format hf: target input {target_input!r} is sentitune's own preprocessing; "
                          "only data.target_input=pair maps to a tokenizer (text, text_pair)")
    if model_type == "gpt2" and pooling == "last":
        return
    if model_type == "llama" and pooling == "last":
        return
    if model_type in BERT_FAMILY and pooling in ("mean", "cls"):
        return
    if model_type in TANH_HEAD_TYPES and pooling == "cls":
        return
    why = ("its classification head reads the last token; only GPT-2 and Llama decoders with last-token pooling "
           "are written" if decoder else f"{pooling} pooling has no exact form in its classification head")
    raise ExportError(f"export --format hf: no exact transformers form for a {model_type} classifier with "
                      f"{pooling} pooling ({why}); use --format onnx")


def _plain_backbone(model: SentimentClassifier) -> nn.Module:
    backbone = model.backbone
    if callable(getattr(backbone, "merge_and_unload", None)):  # a PEFT model: LoRA folded into the weights
        import copy

        backbone = copy.deepcopy(backbone).merge_and_unload()
    return backbone


def _classes_config(config: Any, labels: list[str], pad_token_id: int | None) -> Any:
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
    config.problem_type = "single_label_classification"
    config.pad_token_id = pad_token_id
    config.architectures = None
    return config


def _set_tanh_head(dense: nn.Linear, out: nn.Linear, a: torch.Tensor, a0: torch.Tensor, b: torch.Tensor,
                   scale: float) -> None:
    """dense+tanh+out computing z = a.x + a0 plus bias b, exactly (module docstring); scale bounds |z|."""
    k, d = a.shape
    if 2 * k > dense.out_features:
        raise ExportError(f"export: {k} classes need {2 * k} units in the head's dense layer, it has "
                          f"{dense.out_features}")
    eps = 0.01 / max(scale, 1e-6)
    w = torch.zeros(dense.out_features, d, dtype=torch.float64)
    bias = torch.zeros(dense.out_features, dtype=torch.float64)
    w[:k], w[k : 2 * k] = eps * a, 2 * eps * a
    bias[:k], bias[k : 2 * k] = eps * a0, 2 * eps * a0
    o = torch.zeros(k, dense.out_features, dtype=torch.float64)
    idx = torch.arange(k)
    o[idx, idx] = 8 / (6 * eps)
    o[idx, idx + k] = -1 / (6 * eps)
    with torch.no_grad():
        dense.weight.copy_(w.float())
        dense.bias.copy_(bias.float())
        out.weight.copy_(o.float())
        out.bias.copy_(b.float())


def _mean_layer(layer: nn.Module, weight: torch.Tensor, scale: float, hidden_scale: float) -> tuple[torch.Tensor,
                                                                                                    torch.Tensor]:
    """Make a BERT-family encoder layer put +-lam*(W.mean) on coordinates [0, 2K) of position 0 (docstring).

    Returns (a, a0): the linear map from the layer's output at position 0 back to z = W.mean.
    """
    k, d = weight.shape
    n_const = (d - 2 * k) // 2 * 2  # even: the constants cancel in the layer norm's mean
    if n_const < 2:
        raise ExportError(f"export: {k} classes leave no room for mean pooling in a {d}-wide layer")
    c = 1e3 * max(scale, 1e-3)  # constants dominate the variance: |z|^2 / c^2 ~ 1e-6
    lam = 1e6 * max(hidden_scale, 1.0) / max(scale, 1e-3)  # the residual's share: |h0| / (lam |z|) ~ 1e-6
    attention = layer.attention
    o_weight = torch.zeros(d, d, dtype=torch.float64)
    o_bias = torch.zeros(d, dtype=torch.float64)
    o_weight[:k], o_weight[k : 2 * k] = lam * weight, -lam * weight
    signs = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(n_const // 2)
    o_bias[2 * k : 2 * k + n_const] = lam * c * signs
    with torch.no_grad():
        for lin in (attention.self.query, attention.self.key):
            lin.weight.zero_()
            lin.bias.zero_()
        attention.self.value.weight.copy_(torch.eye(d))
        attention.self.value.bias.zero_()
        attention.output.dense.weight.copy_(o_weight.float())
        attention.output.dense.bias.copy_(o_bias.float())
        for norm in (attention.output.LayerNorm, layer.output.LayerNorm):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
        for lin in (layer.intermediate.dense, layer.output.dense):
            lin.weight.zero_()
            lin.bias.zero_()
    # After the layer norms, y_i - y_{K+i} = 2 lam z_i / sigma and sigma = lam * c * sqrt(n_const / d).
    half_sigma = c * (n_const / d) ** 0.5 / 2
    a = torch.zeros(k, d, dtype=torch.float64)
    idx = torch.arange(k)
    a[idx, idx] = half_sigma
    a[idx, idx + k] = -half_sigma
    return a, torch.zeros(k, dtype=torch.float64)


def _llama_logits_layer(hf: nn.Module, weight: torch.Tensor, bias: torch.Tensor, final_norm: torch.Tensor,
                        scale: float, residual_max: torch.Tensor) -> None:
    """Make Llama's last decoder layer compute the head (module docstring); residual_max: per-dim bound of the
    residual stream entering the final norm (slots go where it is smallest)."""
    base = hf.model
    layer = base.layers[-1]
    k, d = weight.shape
    mlp = layer.mlp
    if 2 * k + 2 > d or k > mlp.up_proj.out_features:
        raise ExportError(f"export: {k} classes do not fit a {d}-wide Llama layer")
    if hf.config.hidden_act != "silu":
        raise ExportError(f"export: Llama with {hf.config.hidden_act!r} activation; use --format onnx")
    order = torch.argsort(residual_max)
    slots, rest = order[: 2 * k], order[2 * k :]
    consts = rest[: len(rest) // 2 * 2]
    c = 1e3 * max(scale, 1e-3)
    lam = 1e6 * max(float(residual_max[slots].max()), 1.0) / max(scale, 1e-3)
    saturated = 30.0  # silu(30) == 30 in float32: sigmoid(30) rounds to 1
    with torch.no_grad():
        for name, param in layer.named_parameters():
            if not name.startswith(("input_layernorm", "post_attention_layernorm")):
                param.zero_()
        layer.input_layernorm.weight.fill_(1.0)
        layer.post_attention_layernorm.weight.copy_(final_norm)  # the MLP sees sentitune's pooled state
        mlp.gate_proj.bias[:k] = saturated
        mlp.up_proj.weight[:k] = weight.float()
        mlp.up_proj.bias[:k] = bias.float()  # unit i holds z_i = W_i.n + b_i
        down = torch.zeros(d, mlp.down_proj.in_features, dtype=torch.float64)
        idx = torch.arange(k)
        down[slots[:k], idx] = lam / saturated
        down[slots[k:], idx] = -lam / saturated
        mlp.down_proj.weight.copy_(down.float())
        signs = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(len(consts) // 2)
        down_bias = torch.zeros(d, dtype=torch.float64)
        down_bias[consts] = lam * c * signs
        mlp.down_proj.bias.copy_(down_bias.float())
        base.norm.weight.fill_(1.0)
        # After the final RMSNorm (rms = lam * c * sqrt(n_const / d)), slot_i - slot_{K+i} = 2 z_i / (c sqrt(n/d)).
        half = c * (len(consts) / d) ** 0.5 / 2
        score = torch.zeros(k, d, dtype=torch.float64)
        score[idx, slots[:k]] = half
        score[idx, slots[k:]] = -half
        hf.score.weight.copy_(score.float())


def build_hf_model(model: SentimentClassifier, pad_token_id: int | None, scale: float,
                   hidden_scale: float, residual_max: torch.Tensor | None = None) -> nn.Module:
    """The transformers *ForSequenceClassification that computes `model`'s class probabilities.

    scale: a bound on |logit| (probe-measured, with margin); hidden_scale: on |last hidden state|;
    residual_max: (Llama) a per-dimension bound of the residual stream before the final norm.
    """
    import copy

    from transformers import AutoModelForSequenceClassification

    backbone = _plain_backbone(model)
    config = _classes_config(copy.deepcopy(backbone.config), list(model.labels), pad_token_id)
    model_type, pooling = config.model_type, model.pooling
    weight, bias = effective_head(model)
    if (model_type in BERT_FAMILY and pooling == "mean") or model_type == "llama":
        config.num_hidden_layers += 1
        if isinstance(getattr(config, "layer_types", None), list):
            config.layer_types = [*config.layer_types, config.layer_types[-1]]
    if model_type == "llama":
        config.mlp_bias = True  # zero in the model's own layers; the logits layer needs them
    hf = AutoModelForSequenceClassification.from_config(config)
    hf.eval()
    base = getattr(hf, hf.base_model_prefix)
    missing, unexpected = base.load_state_dict(backbone.state_dict(), strict=False)
    if unexpected or any(not _is_new(name, model_type, pooling, config) for name in missing):
        raise ExportError(f"export: the {model_type} backbone's weights do not fit {type(hf).__name__} "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    if model_type == "gpt2":
        _fold_bias(hf, weight, bias)
        return hf
    if model_type == "llama":
        with torch.no_grad():
            for name, param in base.named_parameters():
                if name in missing:
                    param.zero_()  # the biases the model's own MLPs never had
        if residual_max is None:
            raise ExportError("export: a Llama export needs the residual stream's range (probe reviews)")
        _llama_logits_layer(hf, weight, bias, backbone.norm.weight.detach(), scale, residual_max)
        return hf
    if pooling == "mean":
        a, a0 = _mean_layer(base.encoder.layer[-1], weight, scale, hidden_scale)
    else:
        a, a0 = weight, torch.zeros(weight.shape[0], dtype=torch.float64)
    dense, out = (base.pooler.dense, hf.classifier) if model_type == "bert" else (hf.classifier.dense,
                                                                                  hf.classifier.out_proj)
    _set_tanh_head(dense, out, a, a0, bias, scale)
    return hf


def _is_new(name: str, model_type: str, pooling: str, config: Any) -> bool:
    """Weights the export writes itself (the pooler, the mean layer), not ones the backbone should have had."""
    if name.startswith("pooler."):
        return True
    if model_type == "llama":
        return name.startswith(f"layers.{config.num_hidden_layers - 1}.") or name.endswith(
            ("gate_proj.bias", "up_proj.bias", "down_proj.bias"))
    return pooling == "mean" and name.startswith(f"encoder.layer.{config.num_hidden_layers - 1}.")


def _fold_bias(hf: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """GPT-2's score has no bias: move the head's into ln_f.bias (delta with W.delta = b + t*1)."""
    centered_w = weight - weight.mean(0, keepdim=True)
    centered_b = bias - bias.mean()
    delta = torch.linalg.lstsq(centered_w, centered_b.unsqueeze(1)).solution.squeeze(1)
    residual = (centered_w @ delta - centered_b).abs().max().item()
    if residual > 1e-6 * max(1.0, centered_b.abs().max().item()):
        raise ExportError(f"export: the head's bias cannot move into GPT-2's final layer norm (residual {residual:.2e})"
                          "; use --format onnx")
    with torch.no_grad():
        hf.score.weight.copy_(weight.float())
        hf.transformer.ln_f.bias.add_(delta.float())


@torch.no_grad()
def _probe(model: SentimentClassifier, tokenizer: Any,
           texts: Sequence[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor, float, float, torch.Tensor | None]:
    """Probe texts, padded so the check covers padding -> (batch, sentitune's probabilities, max |logit|,
    max |last hidden state|, a Llama's per-dimension max |residual| before its final norm), from one forward
    pass (hooks keep the backbone's output and the final norm's input on the way)."""
    batch = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
    mask = batch["attention_mask"]
    seen: dict[str, torch.Tensor] = {}
    backbone = model.backbone
    plain = backbone.get_base_model() if callable(getattr(backbone, "get_base_model", None)) else backbone
    norm = getattr(plain, "norm", None) if backbone.config.model_type == "llama" else None
    hooks = [backbone.register_forward_hook(lambda _m, _a, out: seen.update(hidden=out.last_hidden_state))]
    if norm is not None:
        hooks.append(norm.register_forward_hook(lambda _m, args, _o: seen.update(residual=args[0])))
    try:
        logits = model.eval()(batch["input_ids"], mask).float()
    finally:
        for hook in hooks:
            hook.remove()
    probs = probabilities(logits, model.num_logits)
    residual = seen["residual"].float()[mask.bool()].abs().amax(0) if "residual" in seen else None
    return dict(batch), probs, float(logits.abs().max()), float(seen["hidden"].float().abs().max()), residual


def export_hf(model: SentimentClassifier, tokenizer: Any, meta: dict[str, Any], dest: Path,
              metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the plain transformers folder to `dest` (atomically); returns its sentitune.json record.

    meta: the model folder's sentitune.json (base, labels, preprocessing) with what export_run adds.
    """
    pre = meta.get("preprocessing") or {}
    check_exportable(model.backbone.config.model_type, model.pooling, is_decoder(model.backbone.config),
                     str(pre.get("truncation", "head")), meta.get("target_input"))
    model = model.float().eval()
    with atomic_dir(dest) as tmp:
        exported_tokenizer = write_tokenizer(tokenizer, tmp, pre)  # what a user's pipeline will tokenize with
        batch, expected, logit_max, hidden_max, residual = _probe(model, exported_tokenizer, PROBE_TEXTS)
        hf = build_hf_model(model, tokenizer.pad_token_id, scale=4 * max(logit_max, 1.0),
                            hidden_scale=4 * max(hidden_max, 1.0),
                            residual_max=None if residual is None else 4 * residual.clamp(min=1.0))
        with torch.no_grad():
            got = torch.softmax(hf(**batch).logits.double(), -1)
        diff = float((got - expected).abs().max())
        if not diff <= MAX_DIFF:
            raise ExportError(f"export: the transformers model's probabilities differ from sentitune's by {diff:.2e} "
                              f"(> {MAX_DIFF:g}) on the probe reviews; not written")
        hf.save_pretrained(tmp)
        record = {**export_record(meta, "hf", len(PROBE_TEXTS), diff), "architecture": type(hf).__name__}
        (tmp / MODEL_META).write_text(json.dumps(record, indent=2))
        (tmp / "README.md").write_text(hf_card(record, metrics, type(hf).__name__), encoding="utf-8")
    return record


