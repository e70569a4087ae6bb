"""A run the ecosystem can use: the self-contained model folder and `sentitune export --format hf`.

The export is loaded where sentitune cannot be imported (a subprocess without site-packages' .pth files,
so the editable install is invisible) through pipeline("text-classification"), on the run's own real
IMDb test reviews (raw, with their <br /> tags), and must give the run's probabilities. `export --out` never
deletes a file of the user's: a folder holding an earlier export and anything else is refused.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import LEARNS_NOTHING_OK, assert_one_line_error, run_cli

from sentitune.data.records import Example

NO_SENTITUNE = r"""
import json, sys
try:
    import sentitune
    raise SystemExit("sentitune is importable here")
except ImportError:
    pass
"""

PIPELINE_SCRIPT = NO_SENTITUNE + r"""
from transformers import pipeline
folder, texts = sys.argv[1], json.load(open(sys.argv[2]))
classify = pipeline("text-classification", model=folder, truncation=True, top_k=None)
rows = classify(texts, batch_size=8)
print(json.dumps([{d["label"]: d["score"] for d in row} for row in rows]))
"""


def run_without_sentitune(script: str, *args: str) -> str:
    """Run `script` in a Python that has the venv's libraries but cannot import sentitune."""
    site = sysconfig.get_paths()["purelib"]
    boot = f"import sys; sys.path.append({site!r}); sys.argv = ['x', *{list(args)!r}]; exec({script!r})"
    done = subprocess.run([sys.executable, "-S", "-c", boot], capture_output=True, text=True, timeout=300,
                          cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def run_predictions(run: Path) -> dict[str, dict[str, str]]:
    with (run / "predictions.csv").open(newline="") as f:
        return {row["id"]: row for row in csv.DictReader(f)}


def test_hf_export_loads_in_a_plain_pipeline_and_gives_the_runs_probabilities(
        minilm_lora_run: tuple[Path, str], imdb_slice: dict[str, list[Example]], tmp_path: Path) -> None:
    run, _ = minilm_lora_run
    out = tmp_path / "minilm-imdb-hf"
    code, stdout, err = run_cli(["export", str(run), "--format", "hf", "--out", str(out)])
    assert code == 0, err
    assert "BertForSequenceClassification" in stdout and "checked on" in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["num_hidden_layers"] == 7  # MiniLM's 6 + the mean-pooling layer
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == 64 and "max_length" not in tokenizer_config
    assert "pipeline(" in (out / "README.md").read_text()

    expected = run_predictions(run)
    raw = {e.id: e.text for e in imdb_slice["test"]}
    ids = sorted(expected)
    assert any("<br" in raw[i] for i in ids), "the slice should exercise the tokenizer's HTML cleaning"
    (tmp_path / "texts.json").write_text(json.dumps([raw[i] for i in ids]))
    got = json.loads(run_without_sentitune(PIPELINE_SCRIPT, str(out), str(tmp_path / "texts.json")))
    assert len(got) == len(ids)
    for i, probs in zip(ids, got, strict=True):
        assert abs(probs["positive"] - float(expected[i]["prob_positive"])) < 1e-4, i
        assert (probs["positive"] > probs["negative"]) == (expected[i]["pred"] == "1"), i


ONNX_SCRIPT = NO_SENTITUNE + r"""
import numpy as np, onnxruntime as ort
from transformers import AutoTokenizer
folder, texts = sys.argv[1], json.load(open(sys.argv[2]))
meta = json.load(open(folder + "/sentitune.json"))
tokenizer = AutoTokenizer.from_pretrained(folder)
session = ort.InferenceSession(folder + "/" + meta["graph"])
out = []
for start in range(0, len(texts), 8):
    batch = tokenizer(texts[start:start + 8], truncation=True, padding=True, return_tensors="np")
    probs = session.run(["probabilities"], {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")})[0]
    out += [dict(zip(meta["labels"], map(float, row))) for row in probs]
print(json.dumps(out))
"""


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_onnx_export_runs_in_onnxruntime_alone_and_gives_the_runs_probabilities(
        minilm_lora_run: tuple[Path, str], imdb_slice: dict[str, list[Example]], tmp_path: Path,
        quantize: str) -> None:
    run, _ = minilm_lora_run
    out = tmp_path / "minilm-imdb-onnx"
    code, stdout, err = run_cli(["export", str(run), "--format", "onnx", "--quantize", quantize, "--out", str(out)])
    assert code == 0, err
    meta = json.loads((out / "sentitune.json").read_text())
    assert meta["graph"] == ("model.int8.onnx" if quantize == "int8" else "model.onnx")
    assert sorted(p.name for p in out.glob("*.onnx")) == [meta["graph"]]
    assert "onnxruntime" in (out / "README.md").read_text()
    expected = run_predictions(run)
    raw = {e.id: e.text for e in imdb_slice["test"]}
    ids = sorted(expected)
    (tmp_path / "texts.json").write_text(json.dumps([raw[i] for i in ids]))
    got = json.loads(run_without_sentitune(ONNX_SCRIPT, str(out), str(tmp_path / "texts.json")))
    diffs = [abs(probs["positive"] - float(expected[i]["prob_positive"])) for i, probs in zip(ids, got, strict=True)]
    if quantize == "none":
        assert max(diffs) < 1e-4
    else:  # int8 weights move probabilities a little (measured: benchmarks/onnx_speed.py), never wildly
        assert max(diffs) < 0.1 and meta["check"]["max_probability_difference"] < 0.1


def test_the_model_folder_alone_predicts_after_its_run_is_gone(minilm_lora_run: tuple[Path, str],
                                                               tmp_path: Path) -> None:
    from sentitune.inference import Predictor

    run, _ = minilm_lora_run
    copy = tmp_path / "run-copy"
    shutil.copytree(run, copy)
    moved = tmp_path / "elsewhere" / "my-model"
    shutil.copytree(copy / "model", moved)
    shutil.rmtree(copy)
    texts = ["A quietly brilliant film, superbly acted.", "Dull, predictable<br /><br />and far too long."]
    want = Predictor(run).predict(texts)
    got = Predictor(moved).predict(texts)
    assert [p.label for p in got] == [p.label for p in want]
    assert all(abs(a.prob_positive - b.prob_positive) < 1e-6 for a, b in zip(got, want, strict=True))
    code, stdout, err = run_cli(["predict", str(moved), texts[0], "--json"])
    assert code == 0, err
    assert json.loads(stdout.splitlines()[0])["label"] == want[0].label


def test_model_folder_names_the_hub_model_and_carries_its_preprocessing(minilm_lora_run: tuple[Path, str]) -> None:
    run, _ = minilm_lora_run
    model = run / "model"
    adapter = json.loads((model / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    meta = json.loads((model / "sentitune.json").read_text())
    assert meta["format_version"] == 2 and meta["sentitune_version"]
    assert (meta["base"], meta["packaged"]) == ("sentence-transformers/all-MiniLM-L6-v2", "minilm")
    assert meta["preprocessing"]["max_length"] == 64 and meta["preprocessing"]["truncation"] == "head"
    assert meta["config"]["method"]["name"] == "lora"
    tokenizer_config = json.loads((model / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == 64 and tokenizer_config["truncation_side"] == "right"
    assert "max_length" not in tokenizer_config  # the base tokenizer's own 128 does not leak in
    card = (model / "README.md").read_text()
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card and "| accuracy |" in card


def test_a_hub_id_of_a_packaged_model_loads_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from sentitune.models.registry import resolve

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve("sentence-transformers/all-MiniLM-L6-v2").source == resolve("minilm").source


def _tiny_run(tmp_path: Path, archive: Path, model: str, method: str, *settings: str) -> Path:
    run = tmp_path / f"run-{Path(model).name}"
    code, _, err = run_cli(["train", "--model", model, "--method", method, "--data", str(archive),
                            "--train-size", "24", "--val-size", "8", "--eval-size", "16", "--max-length", "40",
                            "--batch-size", "8", "--epochs", "1", "--seed", "3", "--out", str(run), "--no-progress",
                            "--set", LEARNS_NOTHING_OK, *[x for s in settings for x in ("--set", s)]])
    assert code == 0, err
    return run


def tiny_llama(folder: Path) -> Path:
    """A 2-layer random Llama (SmolLM2's architecture) with the real GPT-2 tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from sentitune.models.registry import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve("gpt2-tiny-random").source)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(("model", "method", "settings", "architecture"), [
    ("gpt2-tiny-random", "full", (), "GPT2ForSequenceClassification"),  # last token; head bias into ln_f
    ("minilm", "probe", ("model.pooling=cls",), "BertForSequenceClassification"),  # first token, tanh pooler
    ("tiny-llama", "lora", ("method.lora.target_modules=[q_proj,v_proj]",), "LlamaForSequenceClassification"),
])
def test_hf_export_of_other_poolings_matches_predict(tmp_path: Path, imdb_slice_archive: Path, model: str,
                                                     method: str, settings: tuple[str, ...], architecture: str) -> None:
    from transformers import pipeline

    from sentitune.inference import Predictor

    if model == "tiny-llama":  # last token through an extra logits layer (hf.py), LoRA merged
        model = str(tiny_llama(tmp_path / "tiny-llama"))
    run = _tiny_run(tmp_path, imdb_slice_archive, model, method, *settings)
    out = tmp_path / "hf"
    code, stdout, err = run_cli(["export", str(run), "--out", str(out)])
    assert code == 0, err
    assert architecture in stdout
    texts = ["A quietly brilliant film.", "Dull.<br />Far too long, and the plot makes no sense at all " * 9, "Fine."]
    want = Predictor(run).predict(texts)
    got = pipeline("text-classification", model=str(out), truncation=True, top_k=None)(texts, batch_size=3)
    for w, g in zip(want, got, strict=True):
        probs = {d["label"]: d["score"] for d in g}
        assert abs(probs["positive"] - w.prob_positive) < 1e-5


def test_hf_export_of_a_target_dependent_run_takes_sentence_target_pairs(
        tmp_path: Path, restaurants: tuple[Path, Path]) -> None:
    from conftest import THREE_CLASSES, restaurant_config
    from transformers import pipeline

    from sentitune.data.targets import read_target_lines
    from sentitune.inference import Predictor

    run = tmp_path / "restaurants"
    code, _, err = run_cli(["train", "--config", str(restaurant_config(tmp_path, restaurants)), "--model", "minilm",
                            "--method", "probe", "--train-size", "48", "--val-size", "8", "--eval-size", "8",
                            "--max-length", "24", "--epochs", "1", "--out", str(run), "--no-progress",
                            "--set", LEARNS_NOTHING_OK])
    assert code == 0, err
    out = tmp_path / "hf"
    code, _, err = run_cli(["export", str(run), "--out", str(out)])
    assert code == 0, err
    assert "text_pair" in (out / "README.md").read_text()
    examples = read_target_lines(restaurants[1], THREE_CLASSES)[:40]
    assert any(len(e.text.split()) > 20 for e in examples)  # some sentences are cut to 24 tokens
    want = Predictor(run).predict([e.text for e in examples], targets=[e.target or "" for e in examples])
    classify = pipeline("text-classification", model=str(out), truncation="only_first", top_k=None)
    got = classify([{"text": e.text, "text_pair": e.target} for e in examples], batch_size=8)
    for w, g in zip(want, got, strict=True):
        probs = {d["label"]: d["score"] for d in g}
        assert max(abs(probs[name] - w.probs[name]) for name in THREE_CLASSES) < 1e-5


def test_export_refuses_what_it_cannot_write_exactly(minilm_lora_run: tuple[Path, str], tmp_path: Path) -> None:
    from sentitune.export.hf import ExportError, check_exportable

    run, _ = minilm_lora_run
    code, _, err = run_cli(["export", str(run), "--format", "hf", "--quantize", "int8", "--out", str(tmp_path / "x")])
    assert_one_line_error(code, err, ["--quantize int8 applies to --format onnx"])
    code, _, err = run_cli(["export", str(run), "--out", str(run)])
    assert_one_line_error(code, err, ["would replace the run's own files"])
    code, _, err = run_cli(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
    assert_one_line_error(code, err, ["not a run directory"])
    mine = tmp_path / "my-models"  # a folder of the user's own: never replaced by an export
    (mine / "notes").mkdir(parents=True)
    (mine / "notes" / "todo.txt").write_text("keep me")
    code, _, err = run_cli(["export", str(run), "--out", str(mine)])
    assert_one_line_error(code, err, ["is not an earlier sentitune export"])
    assert (mine / "notes" / "todo.txt").read_text() == "keep me"
    code, _, err = run_cli(["export", str(run), "--out", str(run.parent)])  # the folder holding the run
    assert_one_line_error(code, err, ["is not an earlier sentitune export"])
    assert (run / "model" / "sentitune.json").exists()
    again = tmp_path / "again"
    for _ in range(2):  # an earlier export of its own is replaced
        code, _, err = run_cli(["export", str(run), "--out", str(again)])
        assert code == 0, err
    with pytest.raises(ExportError, match="use --format onnx"):
        check_exportable("qwen2", "last", True, "head", None)  # no mlp_bias option for the logits layer
    with pytest.raises(ExportError, match="use --format onnx"):
        check_exportable("mpnet", "mean", False, "head", None)  # its relative position bias is in every layer
    with pytest.raises(ExportError, match="head\\+tail"):
        check_exportable("bert", "mean", False, "head+tail", None)
    with pytest.raises(ExportError, match="markers"):
        check_exportable("bert", "mean", False, "head", "markers")
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------- never delete the user's files


@pytest.fixture(scope="module")
def run(full_gpt2_run: Path) -> Path:
    """A tiny full fine-tune of gpt2-tiny-random (conftest): its hf export is exact."""
    return full_gpt2_run


def test_an_earlier_export_with_a_users_file_is_refused_and_the_file_kept(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    code, _, err = run_cli(["export", str(run), "--format", "hf", "--out", str(out)])
    assert code == 0, err
    (out / "notes.txt").write_text("keep me")
    before = sorted(p.name for p in out.iterdir())
    code, _, err = run_cli(["export", str(run), "--format", "hf", "--out", str(out)])
    assert_one_line_error(code, err, [f"--out {out}", "(notes.txt)", "would be deleted", "new or empty folder"])
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == before
    # A folder of the user's inside it counts as well.
    (out / "notes.txt").unlink()
    (out / "mine").mkdir()
    (out / "mine" / "todo.txt").write_text("keep me too")
    code, _, err = run_cli(["export", str(run), "--format", "onnx", "--out", str(out)])
    assert_one_line_error(code, err, ["(mine)", "would be deleted"])
    assert (out / "mine" / "todo.txt").read_text() == "keep me too"


def test_an_earlier_export_of_either_format_is_replaced(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    for fmt in ("hf", "hf", "onnx", "hf"):  # twice the same; over the other format, both ways
        code, _, err = run_cli(["export", str(run), "--format", fmt, "--out", str(out)])
        assert code == 0, f"{fmt}: {err}"
        assert json.loads((out / "sentitune.json").read_text())["format"] == fmt
    assert (out / "config.json").is_file() and not (out / "model.onnx").exists()


def test_every_name_an_export_may_write_is_allowed(tmp_path: Path) -> None:
    """Names the two test exports above do not write (the int8 graph, sharded weights, a sentencepiece
    vocabulary, a chat template...) are an earlier export's too; anything else is not."""
    from sentitune.errors import RunError
    from sentitune.export import check_destination

    out = tmp_path / "earlier"
    out.mkdir()
    (out / "sentitune.json").write_text(json.dumps({"format": "onnx"}))
    names = ["README.md", "model.int8.onnx", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "chat_template.jinja", "spiece.model", "vocab.txt", "merges.txt", "config.json",
             "model-00001-of-00002.safetensors", "model.safetensors.index.json", "generation_config.json"]
    for name in names:
        (out / name).write_text("x")
    (out / "additional_chat_templates").mkdir()
    (out / "additional_chat_templates" / "tool_use.jinja").write_text("x")
    check_destination(out)  # no error
    for foreign in (".hidden", "model.onnx.bak", "notes.txt"):
        (out / foreign).write_text("x")
        with pytest.raises(RunError, match=rf"\({foreign.replace('.', '[.]')}\)"):
            check_destination(out)
        (out / foreign).unlink()
    (out / "config.json").unlink()
    (out / "config.json").mkdir()  # an export writes it as a file: a folder of that name is someone else's
    with pytest.raises(RunError, match=r"\(config\.json\)"):
        check_destination(out)
