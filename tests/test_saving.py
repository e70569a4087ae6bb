"""A trained classifier on disk (sentitune.models.saving): saved, and loaded back from anywhere; a model folder that
is incomplete or damaged is one line naming the file (exit 2, never a traceback), in-process and from a real
process; and the same LoRA config writes the same bytes in any two processes.

The damaged folders are copies of two tiny runs of the packaged `gpt2-tiny-random` (conftest `runs`: a LoRA run
and a full fine-tune), each case breaking its own copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import ROOT, assert_one_line_error, copy_run, run_cli

from sentitune.data.batching import encode
from sentitune.data.records import Example
from sentitune.evaluation import score
from sentitune.models.registry import resolve
from sentitune.models.saving import load_model

# --------------------------------------------------------------------------- saved and loaded from anywhere


@pytest.mark.numeric  # `make test` runs it again under the other precision
def test_saved_model_from_a_relative_folder_loads_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run trained on `--model ./folder` must still load after `cd` elsewhere; GPT-2 keeps its pad token."""
    import os
    import shutil

    from sentitune.models.classifier import SentimentClassifier
    from sentitune.models.registry import load_backbone, load_tokenizer
    from sentitune.models.saving import save_model

    shutil.copytree(resolve("gpt2-tiny-random").source, tmp_path / "tiny", copy_function=os.symlink)
    monkeypatch.chdir(tmp_path)
    tokenizer = load_tokenizer("tiny")
    torch.manual_seed(0)
    backbone = load_backbone(resolve("tiny").source)
    model = SentimentClassifier(backbone, backbone.config.hidden_size, "last", 1, 0.0).eval()
    save_model(model, tokenizer, "tiny", "base", tmp_path / "run" / "model")
    data = encode([Example("a", "Fine film.", 1), Example("b", "A dull, overlong film.", 0)], tokenizer, 16)
    expected, _ = score(model, data, 2, tokenizer.pad_token_id)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded, loaded_tokenizer = load_model(tmp_path / "run" / "model")
    assert loaded_tokenizer.pad_token_id == tokenizer.pad_token_id == 50256
    assert (loaded.pooling, loaded.num_logits) == ("last", 1)
    got, _ = score(loaded, data, 2, loaded_tokenizer.pad_token_id)
    assert got.tolist() == pytest.approx(expected.tolist(), abs=1e-6)


# --------------------------------------------------------------------------- damaged model folders


@dataclass
class Broken:
    """`breaks(model_dir)` damages a copy of run `run`; the error line must name `names(model_dir)`."""

    id: str
    run: str
    breaks: Callable[[Path], None]
    names: Callable[[Path], list[str]]
    command: str = "predict"


def _remove(*names: str) -> Callable[[Path], None]:
    def breaks(model: Path) -> None:
        for name in names:
            shutil.rmtree(model / name) if (model / name).is_dir() else (model / name).unlink()

    return breaks


def _truncate(model: Path) -> None:
    head = model / "head.safetensors"
    head.write_bytes(head.read_bytes()[:100])


def _edit_meta(edit: Callable[[dict[str, object]], str]) -> Callable[[Path], None]:
    def breaks(model: Path) -> None:
        meta = model / "sentitune.json"
        meta.write_text(edit(json.loads(meta.read_text())))

    return breaks


def _incomplete(name: str) -> Callable[[Path], list[str]]:
    return lambda model: [f"{model / name}: missing", "the run's model folder is incomplete"]


BROKEN = [
    Broken("head-missing", "lora", _remove("head.safetensors"), _incomplete("head.safetensors")),
    Broken("adapter-missing", "lora", _remove("adapter"), _incomplete("adapter")),
    Broken("backbone-missing", "full", _remove("backbone"), _incomplete("backbone")),
    Broken("tokenizer-missing", "lora", _remove("tokenizer.json", "tokenizer_config.json"),
           _incomplete("tokenizer_config.json")),
    Broken("tokenizer-vocabulary-missing", "lora", _remove("tokenizer.json"), _incomplete("tokenizer.json")),
    Broken("head-truncated", "lora", _truncate, lambda m: [f"{m / 'head.safetensors'}: cannot load", "damaged"]),
    Broken("meta-not-json", "lora", _edit_meta(lambda meta: '{"base": "gpt2-tiny-random", '),
           lambda m: [f"{m / 'sentitune.json'}: not valid JSON"]),
    Broken("meta-missing-key", "lora", _edit_meta(lambda meta: json.dumps({k: v for k, v in meta.items()
                                                                           if k != "weights"})),
           lambda m: [f"{m / 'sentitune.json'}: missing key 'weights'"]),
    Broken("evaluate-head-missing", "lora", _remove("head.safetensors"), _incomplete("head.safetensors"), "evaluate"),
    Broken("evaluate-backbone-missing", "full", _remove("backbone"), _incomplete("backbone"), "evaluate"),
]


@pytest.mark.parametrize("case", BROKEN, ids=[c.id for c in BROKEN])
def test_damaged_model_folder_is_one_line(case: Broken, runs: dict[str, Path], tmp_path: Path) -> None:
    run = copy_run(runs[case.run], tmp_path / "run")
    case.breaks(run / "model")
    argv = (["predict", str(run), "A fine, moving film."] if case.command == "predict"
            else ["evaluate", str(run), "--no-baseline", "--no-progress"])
    code, _, err = run_cli(argv)
    assert_one_line_error(code, err, case.names(run / "model"))


def test_damaged_run_is_one_line_from_a_real_process(runs: dict[str, Path], tmp_path: Path) -> None:
    """`python -m sentitune.cli` as users run it: library warnings reach stderr too (in-process, pytest hides them)."""
    run = copy_run(runs["lora"], tmp_path / "run")
    _truncate(run / "model")  # fails after the LoRA adapter loaded, which warns
    done = subprocess.run([sys.executable, "-m", "sentitune.cli", "predict", str(run), "A fine film."],
                          capture_output=True, text=True, timeout=300)
    assert_one_line_error(done.returncode, done.stderr, [f"{run / 'model' / 'head.safetensors'}: cannot load"])


# --------------------------------------------------------------------------- the same bytes in any process


def _hash_seeds_with_different_set_orders(names: list[str]) -> tuple[str, str]:
    """Two PYTHONHASHSEEDs under which list(set(names)) comes out in different orders (what PEFT writes)."""
    seen: dict[str, str] = {}
    for seed in range(1, 40):
        order = subprocess.run([sys.executable, "-c", f"print(list(set({names!r})))"], capture_output=True,
                               text=True, env={**os.environ, "PYTHONHASHSEED": str(seed)}, check=True).stdout
        if seen and order not in seen:
            return next(iter(seen.values())), str(seed)
        seen.setdefault(order, str(seed))
    pytest.fail(f"no two hash seeds order {names} differently")


def test_11_two_runs_of_one_lora_config_write_the_same_adapter_config(imdb_slice_archive: Path,
                                                                       tmp_path: Path) -> None:
    """Two processes (string hashing differs between them, as between any two runs) write identical folders."""
    targets = ["c_attn", "c_proj", "c_fc"]
    seeds = _hash_seeds_with_different_set_orders(targets)
    configs = []
    for i, seed in enumerate(seeds):
        run = tmp_path / f"run{i}"
        argv = [sys.executable, "-m", "sentitune", "train", "--model", "gpt2-tiny-random", "--method", "lora",
                "--data", str(imdb_slice_archive), "--train-size", "16", "--eval-size", "8", "--max-length", "32",
                "--no-progress", "--set", "train.baseline=false", "--set", "data.val_size=8",
                "--set", f"method.lora.target_modules=[{','.join(targets)}]", "--out", str(run)]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        assert done.returncode == 0, done.stderr[-2000:]
        configs.append((run / "model" / "adapter" / "adapter_config.json").read_bytes())
    assert configs[0] == configs[1]
    assert json.loads(configs[0])["target_modules"] == sorted(targets)
