"""Model specs: packaged names, local folders, and one clear error for an unreachable hub id."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import TINY_SETTINGS as T
from conftest import assert_one_line_error, run_cli

from sentitune.cli import main
from sentitune.errors import ModelError
from sentitune.models.packaged import PACKAGED
from sentitune.models.registry import load_backbone, load_tokenizer, resolve


def test_packaged_minilm_resolves_to_a_model_folder() -> None:
    r = resolve("minilm")
    folder = Path(r.source)
    assert folder.is_dir() and (folder / "config.json").is_file()
    assert (r.spec, r.model_type, r.is_decoder) == ("minilm", "bert", False)
    tok = load_tokenizer(r.source)
    assert tok.pad_token_id == 0 and tok("a fine film")["input_ids"][0] == tok.cls_token_id


def test_local_folder_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "my-minilm"
    shutil.copytree(resolve("minilm").source, copy, copy_function=os.symlink)  # a folder of its own, no 90 MB copy
    monkeypatch.chdir(tmp_path)
    r = resolve("my-minilm")  # relative to the working directory
    assert r.source == str(copy.resolve()) and r.model_type == "bert"
    backbone = load_backbone(r.source)
    assert backbone.config.hidden_size == 384 and backbone.config.num_hidden_layers == 6


def test_folder_without_config_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="a model folder needs config.json"):
        resolve(str(tmp_path))


def test_unreachable_hub_id_lists_the_offline_models() -> None:
    with pytest.raises(ModelError) as info:
        resolve("some-org/does-not-exist")
    message = str(info.value)
    assert "'some-org/does-not-exist'" in message and "\n" not in message
    for name in PACKAGED:
        assert name in message


def test_cli_unreachable_model_exits_2_without_traceback(
    tmp_path: Path, imdb_slice_archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(["train", "--model", "some-org/does-not-exist", "--data", str(imdb_slice_archive),
                 "--max-length", "64", "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith("sentitune: error: model 'some-org/does-not-exist'")
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert all(name in captured.err for name in PACKAGED)
    assert not (out / "metrics.json").exists()


def test_gpt2_tokenizer_gets_a_pad_token() -> None:
    r = resolve("gpt2-tiny-random")
    assert r.model_type == "gpt2" and r.is_decoder
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(r.source).pad_token is None  # the real GPT-2 tokenizer has none
    tok = load_tokenizer(r.source)
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"
    assert tok.pad_token_id == 50256 and tok.padding_side == "right"
    batch = tok(["short", "a longer review text"], padding=True)
    assert batch["input_ids"][0][-1] == 50256 and batch["attention_mask"][0][-1] == 0


def test_a_saved_models_pad_token_wins_over_eos_and_no_pad_nor_eos_is_an_error() -> None:
    """ensure_pad_token, as load_model uses it: a recorded pad id is used as is; without one, EOS."""
    from transformers import AutoTokenizer

    from sentitune.models.registry import ensure_pad_token

    source = resolve("gpt2-tiny-random").source
    recorded = ensure_pad_token(AutoTokenizer.from_pretrained(source), "run/model", pad_token_id=0)
    assert recorded.pad_token_id == 0 and recorded.padding_side == "right"
    bare = AutoTokenizer.from_pretrained(source)
    bare.eos_token = None
    with pytest.raises(ModelError, match="somewhere: tokenizer has neither a pad nor an EOS token"):
        ensure_pad_token(bare, "somewhere")


def test_models_command_lists_packaged(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in PACKAGED:
        assert name in out


@pytest.mark.parametrize(("spec", "name"), [("gpt2-tiny-random", "attn_pdrop"),
                                            ("minilm", "attention_probs_dropout_prob")])
def test_attention_dropout_replaces_the_backbones_own(spec: str, name: str) -> None:
    import torch

    from sentitune.config import ConfigError, load_config

    source = resolve(spec).source
    assert getattr(load_backbone(source).config, name) == pytest.approx(0.1)  # None: the backbone's own
    backbone = load_backbone(source, attention_dropout=0.0)
    assert getattr(backbone.config, name) == 0.0
    rates = {m.p for n, m in backbone.named_modules()
             if isinstance(m, torch.nn.Dropout) and ("attn_dropout" in n or n.endswith("attention.self.dropout"))}
    assert rates == {0.0}, rates  # the attention modules themselves were built with it
    with pytest.raises(ConfigError, match="model.attention_dropout"):
        load_config(None, ["model.attention_dropout=1.5"])


def test_3_a_model_folder_without_tokenizer_files_is_one_line_before_the_run(imdb_slice_archive: Path,
                                                                              tmp_path: Path) -> None:
    from sentitune.models.registry import resolve

    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    packaged = Path(resolve("gpt2-tiny-random").source)
    for name in ("config.json", "model.safetensors"):  # a transformers model folder, saved without its tokenizer
        shutil.copy(packaged / name, folder / name)
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "--model", str(folder), "--data", str(imdb_slice_archive), *T, "--out", str(run)])
    assert_one_line_error(code, err, [str(folder), "tokenizer is empty"])
    assert not run.exists()
