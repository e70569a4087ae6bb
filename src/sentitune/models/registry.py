"""Model specs: a hub id, a local folder or a packaged name -> tokenizer + backbone.

This is the only module that knows where weights come from; everything else asks it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sentitune.errors import ModelError
from sentitune.models.packaged import PACKAGED, by_hub_id

# Model types whose backbone reads left to right: pool the last real token, not the first.
DECODER_TYPES = {"gpt2", "gpt_neo", "gpt_neox", "gptj", "llama", "mistral", "qwen2", "qwen3", "phi", "phi3",
                 "gemma", "gemma2", "opt", "bloom", "falcon", "smollm3", "olmo", "olmo2"}

# Default LoRA targets per model type: the attention query/value projections (Hu et al. 2021).
LORA_TARGETS = {
    "gpt2": ["c_attn"],
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "mpnet": ["q", "v"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "gpt_neox": ["query_key_value"],
}


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # what the user wrote
    source: str  # a local folder or a hub id: what from_pretrained receives
    model_type: str
    is_decoder: bool


def resolve(spec: str) -> ResolvedModel:
    """Resolve a spec; a hub id that cannot be reached raises one clear ModelError."""
    from transformers import AutoConfig

    if spec in PACKAGED:
        source = str(PACKAGED[spec].build())
    elif Path(spec).expanduser().is_dir():
        source = str(Path(spec).expanduser().resolve())
        if not (Path(source) / "config.json").exists():
            raise ModelError(f"{source}: a model folder needs config.json")
    else:
        source = spec
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True)  # a folder, or the HF cache
    except (OSError, ValueError) as e:
        copy = by_hub_id(spec) if source == spec else None
        if copy is not None and not hub_reachable():  # offline: the packaged copy of the same weights
            return resolve(copy.name)
        if source != spec or not hub_reachable():
            raise _unresolvable(spec, e) from None
        try:
            config = AutoConfig.from_pretrained(source)
        except (OSError, ValueError) as e2:
            raise _unresolvable(spec, e2) from None
    return ResolvedModel(spec, source, config.model_type, is_decoder(config))


def base_record(spec: str) -> dict[str, str | None]:
    """What a saved model names as its base: the hub id wherever one exists (a packaged name is sentitune's
    own), the packaged name it was loaded from, and a folder as an absolute path (the only name it has)."""
    if spec in PACKAGED:
        packaged = PACKAGED[spec]
        return {"base": packaged.hub_id or spec, "packaged": spec,
                "base_weights": "hub" if packaged.same_weights else f"packaged copy: {packaged.description}"}
    if Path(spec).expanduser().is_dir():
        return {"base": str(Path(spec).expanduser().resolve()), "packaged": None, "base_weights": "local folder"}
    copy = by_hub_id(spec)
    return {"base": spec, "packaged": copy.name if copy else None, "base_weights": "hub"}


def base_source(record: dict[str, Any]) -> str:
    """Where to load a saved model's base from: the packaged copy when it is installed, else its hub id/folder."""
    packaged = record.get("packaged")
    if isinstance(packaged, str) and packaged in PACKAGED:
        try:
            return resolve(packaged).source
        except ModelError:
            pass  # not installed here: the hub id may still be in the cache or reachable
    return resolve(str(record["base"])).source


def _unresolvable(spec: str, error: Exception) -> ModelError:
    return ModelError(
        f"model {spec!r}: not a packaged name, a local folder, or a reachable hub id ({type(error).__name__}). "
        f"Offline alternatives: {', '.join(PACKAGED)} (see `sentitune models`)"
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick connect to the hub, so offline users get one clear error instead of ~45 s of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def is_decoder(config: Any) -> bool:
    archs = getattr(config, "architectures", None) or []
    return config.model_type in DECODER_TYPES or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)


def load_tokenizer(source: str) -> Any:
    """The tokenizer, with a pad token set when it has none (GPT-2): EOS doubles as padding."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise ModelError(f"{source}: cannot load its tokenizer ({_first_line(e)})") from None
    # A model folder without tokenizer files still "loads" (transformers builds an empty vocabulary) and then
    # turns every review into zero tokens; found here, it is one line before any run folder exists.
    if not tokenizer("A good film.", add_special_tokens=False)["input_ids"]:
        raise ModelError(f"{source}: its tokenizer is empty (no tokenizer files: tokenizer.json, vocab.json + "
                         "merges.txt, vocab.txt, or tokenizer.model); save the tokenizer into the model folder")
    return ensure_pad_token(tokenizer, source)


def _first_line(error: BaseException) -> str:
    return next(iter(str(error).strip().splitlines()), type(error).__name__)


def ensure_pad_token(tokenizer: Any, where: str, pad_token_id: int | None = None) -> Any:
    """Give a tokenizer without a pad token one, and pad on the right (where the pooling expects padding).

    Why: batches are padded, and GPT-2-style tokenizers have no pad token; EOS doubles as padding
    (the attention mask hides it). `pad_token_id`: the one a saved model recorded, used instead of EOS.
    """
    if tokenizer.pad_token_id is None:
        if pad_token_id is not None:
            tokenizer.pad_token_id = pad_token_id
        elif tokenizer.eos_token is None:
            raise ModelError(f"{where}: tokenizer has neither a pad nor an EOS token")
        else:
            tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


# What each architecture calls the dropout on its attention probabilities (GPT-2; BERT, MPNet; DistilBERT, Llama).
ATTENTION_DROPOUT_NAMES = ("attn_pdrop", "attention_probs_dropout_prob", "attention_dropout")


def load_backbone(source: str, attention_dropout: float | None = None, **kwargs: Any) -> Any:
    """The headless transformer (GPT2Model, LlamaModel, BertModel…), without an unused pooler; with
    `attention_dropout`, that dropout rate on its attention probabilities instead of its own."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(source)
    if attention_dropout is not None:
        for name in ATTENTION_DROPOUT_NAMES:
            if hasattr(config, name):
                setattr(config, name, attention_dropout)
    if config.model_type in ("bert", "roberta", "mpnet", "xlm-roberta"):
        kwargs.setdefault("add_pooling_layer", False)
    if config.model_type == "gpt2" and getattr(config, "activation_function", None) == "gelu_new":
        # Same function, a faster kernel (benchmarks/activation_kernel.py, docs/PERFORMANCE.md).
        config.activation_function = "gelu_pytorch_tanh"
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the "unexpected key: lm_head / pooler" reports are expected here
    hf_logging.disable_progress_bar()  # library code does not draw on the terminal
    try:
        return AutoModel.from_pretrained(source, config=config, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def default_lora_targets(model_type: str) -> list[str]:
    if model_type not in LORA_TARGETS:
        raise ModelError(f"no default LoRA targets for model type {model_type!r}: set method.lora.target_modules")
    return list(LORA_TARGETS[model_type])
