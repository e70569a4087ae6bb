"""ONNX export (sentitune.export.onnx): the graph of a real trained run (MiniLM LoRA on a real IMDb slice) against
the torch model it came from, ONNX Runtime without sentitune, int8 dynamic quantization, the run's graph cache,
`evaluate`/`predict --quantize int8` through the CLI, and a decoder (gpt2-tiny-random LoRA, one-logit head).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from conftest import LEARNS_NOTHING_OK, assert_one_line_error, run_cli

from sentitune.data.batching import Encoded, encode, encoding_args
from sentitune.data.records import Example
from sentitune.data.text import clean_text
from sentitune.evaluation import score
from sentitune.export.onnx import ONNX_DIR, OnnxScorer, export_onnx, int8_path, model_key, run_graph
from sentitune.models.registry import is_decoder
from sentitune.models.saving import load_model
from sentitune.runs import RunDir

FP32_TOL = 1e-4  # fp32 ORT against fp32 torch: measured about 1e-7 (kernels differ, the function does not)
# int8 against fp32: measured max |diff| 0.018 on this slice (this run), 0.16 on 400 longer test reviews of the
# 4000-review quickstart run (benchmarks/onnx_speed.py); dynamic quantization moves a probability by a few 0.01.
INT8_TOL = 0.1


@pytest.fixture(scope="module")
def run_copy(minilm_lora_run: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's trained run: these tests write graphs and eval files into it."""
    run = tmp_path_factory.mktemp("onnx") / "run"
    shutil.copytree(minilm_lora_run[0], run)
    return run


@pytest.fixture(scope="module")
def loaded(run_copy: Path) -> tuple[object, object]:
    return load_model(run_copy / "model")


@pytest.fixture(scope="module")
def graphs(run_copy: Path, loaded: tuple[object, object]) -> tuple[Path, Path]:
    """The run's fp32 and int8 graphs, made through the run's cache (what evaluate/predict use)."""
    model, _ = loaded
    int8 = run_graph(run_copy / "model", model, "int8")
    return int8.with_name("model.onnx"), int8


def encoded_slice(imdb_slice: dict[str, list[Example]], run: Path, tokenizer: object, decoder: bool) -> Encoded:
    """The slice's 60 test reviews, encoded as the run encodes them (its max_length, truncation, cleaning)."""
    cfg = RunDir(run).config()
    examples = [Example(e.id, clean_text(e.text), e.label) for e in imdb_slice["test"]]
    data = encode(examples, tokenizer, **encoding_args(cfg.data, decoder))
    assert len({len(ids) for ids in data.input_ids}) > 5, "the reviews must differ in length, so batches are padded"
    return data


def test_fp32_graph_gives_the_torch_probabilities(graphs: tuple[Path, Path], loaded: tuple[object, object],
                                                  imdb_slice: dict[str, list[Example]], run_copy: Path) -> None:
    """Torch one review at a time (no padding) against ORT in padded batches of 7 of different lengths."""
    model, tokenizer = loaded
    data = encoded_slice(imdb_slice, run_copy, tokenizer, decoder=False)
    expected, torch_loss = score(model, data, 1, tokenizer.pad_token_id)
    got, onnx_loss = OnnxScorer(graphs[0]).score(data, 7, tokenizer.pad_token_id)
    assert got.shape == expected.shape == (len(data),)
    assert np.abs(got - expected).max() < FP32_TOL
    assert onnx_loss == pytest.approx(torch_loss, abs=FP32_TOL)
    assert got.std() > 1e-3, "a trained run's probabilities differ between reviews"


def test_graph_inputs_outputs_and_metadata(graphs: tuple[Path, Path]) -> None:
    import onnx

    proto = onnx.load(str(graphs[0]))
    onnx.checker.check_model(proto)
    inputs = {i.name: i.type.tensor_type for i in proto.graph.input}
    assert list(inputs) == ["input_ids", "attention_mask"]
    for t in inputs.values():
        assert t.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in t.shape.dim] == ["batch", "sequence"]  # dynamic, named axes
    assert [o.name for o in proto.graph.output] == ["logits", "probabilities"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["sentitune.labels"]) == ["negative", "positive"]


STANDALONE = r'''
import json, sys
site, graph, tokenizer_dir, texts_file, max_length, out = sys.argv[1:]
sys.path.append(site)  # -I -S: the venv's packages, without the .pth files (sentitune is an editable install)
try:
    import sentitune  # noqa: F401
except ImportError:
    pass
else:
    sys.exit("sentitune is importable here: the test would prove nothing")
import numpy as np
import onnxruntime as ort
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
texts = json.load(open(texts_file, encoding="utf-8"))
probs = []
for start in range(0, len(texts), 8):
    enc = tokenizer(texts[start:start + 8], truncation=True, max_length=int(max_length), padding=True,
                    return_tensors="np")
    feed = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    probs += session.run(["probabilities"], feed)[0].tolist()
assert not any(name.startswith("sentitune") for name in sys.modules)
json.dump(probs, open(out, "w"))
'''


def test_onnx_runtime_and_the_tokenizer_alone_reproduce_the_run(graphs: tuple[Path, Path], run_copy: Path,
                                                                 loaded: tuple[object, object],
                                                                 imdb_slice: dict[str, list[Example]],
                                                                 tmp_path: Path) -> None:
    """What a user without sentitune has: the graph, the tokenizer files, onnxruntime and transformers."""
    from sentitune.inference import Predictor

    _, tokenizer = loaded
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    texts = [clean_text(e.text) for e in imdb_slice["test"]]
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    (tmp_path / "standalone.py").write_text(STANDALONE, encoding="utf-8")
    max_length = RunDir(run_copy).config().data.max_length
    site = sysconfig.get_paths()["purelib"]
    done = subprocess.run([sys.executable, "-I", "-S", str(tmp_path / "standalone.py"), site, str(graphs[0]),
                           str(tmp_path / "tokenizer"), str(tmp_path / "texts.json"), str(max_length),
                           str(tmp_path / "out.json")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.array(json.loads((tmp_path / "out.json").read_text()))
    expected = [p.prob_positive for p in Predictor(run_copy).predict(texts)]
    assert got.shape == (len(texts), 2)
    assert np.abs(got[:, 1] - expected).max() < FP32_TOL
    assert np.abs(got.sum(1) - 1).max() < 1e-6


def test_int8_graph_is_quantized_and_close(graphs: tuple[Path, Path], loaded: tuple[object, object],
                                           imdb_slice: dict[str, list[Example]], run_copy: Path) -> None:
    import onnx

    from sentitune.metrics import classification_metrics

    fp32, int8 = graphs
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert "DynamicQuantizeLinear" in ops and ops & {"MatMulInteger", "DynamicQuantizeMatMul"}
    assert int8.stat().st_size < 0.4 * fp32.stat().st_size  # int8 weights: a quarter of fp32 (plus scales)
    model, tokenizer = loaded
    data = encoded_slice(imdb_slice, run_copy, tokenizer, decoder=False)
    expected, _ = score(model, data, 8, tokenizer.pad_token_id)
    got, loss = OnnxScorer(int8).score(data, 8, tokenizer.pad_token_id)
    diff = np.abs(got - expected)
    accuracy = {name: classification_metrics(data.labels, p)["accuracy"] for name, p in
                (("fp32", expected), ("int8", got))}
    print(f"int8 on {len(data)} reviews: max |diff| {diff.max():.4f}, mean {diff.mean():.5f}; accuracy {accuracy}")
    assert diff.max() < INT8_TOL
    assert diff.max() > 0, "an int8 graph that changes nothing was not quantized"
    assert np.isfinite(loss)


def accuracy_line(out: str) -> tuple[float, float, float]:
    found = re.search(r"int8, onnxruntime: accuracy (\d\.\d{4}) \(fp32 (\d\.\d{4}), ([+-]\d\.\d{4})\)", out)
    assert found, out
    return float(found.group(1)), float(found.group(2)), float(found.group(3))


def test_evaluate_quantize_int8_reports_the_change(run_copy: Path, graphs: tuple[Path, Path]) -> None:
    code, out, err = run_cli(["evaluate", str(run_copy), "--no-baseline", "--no-progress"])
    assert code == 0, err
    torch_eval = json.loads((run_copy / "eval-test.json").read_text())
    code, out, err = run_cli(["evaluate", str(run_copy), "--quantize", "int8", "--no-baseline", "--no-progress"])
    assert code == 0, err
    int8_acc, fp32_acc, change = accuracy_line(out)
    assert change == pytest.approx(int8_acc - fp32_acc, abs=1e-4)
    assert "saved model (fp32, torch)" in out and "saved model (int8, onnxruntime)" in out
    result = json.loads((run_copy / "eval-test-int8.json").read_text())
    assert result["backend"] == "onnxruntime" and result["precision"] == "int8"
    assert result["fp32"]["accuracy"] == pytest.approx(torch_eval["model"]["accuracy"])  # the fp32 it compares to
    assert result["model"]["accuracy"] == pytest.approx(int8_acc, abs=5e-5)
    assert Path(result["graph"]) == graphs[1]  # the cached graph, not a new export
    assert json.loads((run_copy / "eval-test.json").read_text()) == torch_eval  # the torch evaluation stays
    rows = (run_copy / "predictions-test-int8.csv").read_text().splitlines()
    assert len(rows) == result["model"]["n"] + 1


def test_evaluate_backend_onnx_is_fp32(run_copy: Path, graphs: tuple[Path, Path]) -> None:
    code, out, err = run_cli(["evaluate", str(run_copy), "--backend", "onnx", "--no-baseline", "--no-progress"])
    assert code == 0, err
    result = json.loads((run_copy / "eval-test-onnx.json").read_text())
    assert result["precision"] == "fp32" and Path(result["graph"]) == graphs[0]
    assert result["model"]["accuracy"] == pytest.approx(result["fp32"]["accuracy"])
    assert result["model"]["loss"] == pytest.approx(result["fp32"]["loss"], abs=FP32_TOL)
    assert "fp32, onnxruntime: accuracy" in out


def test_predict_quantize_int8(run_copy: Path, graphs: tuple[Path, Path], imdb_slice: dict[str, list[Example]],
                               tmp_path: Path) -> None:
    texts = [e.text for e in imdb_slice["test"][:3] + imdb_slice["test"][-3:]]
    results = {}
    for flags in ([], ["--quantize", "int8"], ["--backend", "onnx"]):
        code, out, err = run_cli(["predict", str(run_copy), *texts, "--json", *flags])
        assert code == 0, err
        results[" ".join(flags)] = [json.loads(line)["prob_positive"] for line in out.splitlines()]
    torch_probs = np.array(results[""])
    assert len(torch_probs) == len(texts)
    assert np.abs(np.array(results["--backend onnx"]) - torch_probs).max() < FP32_TOL
    int8_diff = np.abs(np.array(results["--quantize int8"]) - torch_probs)
    assert 0 < int8_diff.max() < INT8_TOL
    code, out, err = run_cli(["predict", str(run_copy), *texts, "--quantize", "int8",
                              "--output", str(tmp_path / "p.csv")])
    assert code == 0, err
    assert len((tmp_path / "p.csv").read_text().splitlines()) == len(texts) + 1


def test_a_changed_model_gets_a_new_graph(run_copy: Path, graphs: tuple[Path, Path], tmp_path: Path) -> None:
    """Keyed by the model's files: a new head (as a retrained run writes) never reuses the old graph."""
    import torch
    from safetensors.torch import load_file, save_file

    changed = tmp_path / "run"
    shutil.copytree(run_copy, changed)  # with its cached graphs
    old_key = model_key(run_copy / "model")
    assert model_key(changed / "model") == old_key  # the same files: the same key, the cache is found
    head = load_file(str(changed / "model" / "head.safetensors"))
    save_file({k: -v for k, v in head.items()}, str(changed / "model" / "head.safetensors"))  # the logits negated
    assert model_key(changed / "model") != old_key
    model, tokenizer = load_model(changed / "model")
    fp32 = run_graph(changed / "model", lambda: model)
    assert fp32.parent.name != old_key
    assert [p.name for p in (changed / "model" / ONNX_DIR).iterdir()] == [fp32.parent.name]  # stale graphs go
    ids = torch.tensor(tokenizer(["A fine film.", "Dull and far too long, I left early."], padding=True)["input_ids"])
    mask = (ids != tokenizer.pad_token_id).long()
    with torch.inference_mode():
        expected = torch.softmax(model(ids, mask), -1).numpy()
    _, got = OnnxScorer(fp32).run(ids.numpy(), mask.numpy())
    assert np.abs(got - expected).max() < FP32_TOL


def test_a_damaged_graph_is_one_line(run_copy: Path, graphs: tuple[Path, Path], tmp_path: Path) -> None:
    damaged = tmp_path / "run"
    shutil.copytree(run_copy, damaged)
    graph = damaged / graphs[1].relative_to(run_copy)
    graph.write_bytes(graph.read_bytes()[:1000])  # a copy cut short
    code, _, err = run_cli(["predict", str(damaged), "A fine film.", "--quantize", "int8"])
    assert_one_line_error(code, err, [str(graph), "cannot load the ONNX graph", f"delete {graph.parent}"])


@pytest.mark.parametrize("flags, expect", [
    (["--quantize", "int8", "--precision", "bf16"], "precision bf16: is for the torch backend"),
    (["--quantize", "int8", "--backend", "torch"], "quantize int8: runs on ONNX Runtime"),
])
def test_conflicting_flags_are_one_line(run_copy: Path, flags: list[str], expect: str) -> None:
    code, _, err = run_cli(["predict", str(run_copy), "A fine film.", *flags])
    assert_one_line_error(code, err, [expect])


def test_a_tfidf_run_has_nothing_to_export(imdb_slice_archive: Path, tmp_path: Path) -> None:
    run = tmp_path / "tfidf"
    code, _, err = run_cli(["train", "--method", "tfidf", "--data", str(imdb_slice_archive), "--train-size", "40",
                            "--eval-size", "10", "--set", "method.tfidf.min_df=1", "--out", str(run), "--no-progress"])
    assert code == 0, err
    code, _, err = run_cli(["predict", str(run), "A fine film.", "--quantize", "int8"])
    assert_one_line_error(code, err, [str(run), "a tfidf run has no trained classifier to export"])
    assert not (run / "model" / ONNX_DIR).exists()


def test_export_onnx_writes_fp32_and_returns_int8(loaded: tuple[object, object], tmp_path: Path) -> None:
    """export_onnx to a path of one's choice (what `sentitune export` builds on); nothing half-written is left."""
    model, _ = loaded
    dest = tmp_path / "out" / "classifier.onnx"
    assert export_onnx(model, dest, quantize="int8") == int8_path(dest) == tmp_path / "out" / "classifier.int8.onnx"
    assert dest.is_file() and int8_path(dest).is_file()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["classifier.int8.onnx", "classifier.onnx"]


def test_gpt2_decoder_lora_run_matches(imdb_slice_archive: Path, imdb_slice: dict[str, list[Example]],
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A decoder: last-token pooling, position ids counted from the mask, right padding, a one-logit head."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "gpt2"
    code, _, err = run_cli(["train", "--model", "gpt2-tiny-random", "--method", "lora", "--data",
                            str(imdb_slice_archive), "--max-length", "48", "--train-size", "16", "--val-size", "4",
                            "--eval-size", "8", "--batch-size", "8", "--epochs", "1", "--set", "model.head=sigmoid",
                            "--set", "model.pooling=last", "--set", "train.baseline=false", "--no-progress",
                            "--set", LEARNS_NOTHING_OK, "--out", str(run)])
    assert code == 0, err
    model, tokenizer = load_model(run / "model")
    assert model.num_logits == 1 and model.pooling == "last" and model.mask_positions
    assert is_decoder(model.backbone.config) and tokenizer.padding_side == "right"
    data = encoded_slice(imdb_slice, run, tokenizer, decoder=True)
    expected, _ = score(model, data, 1, tokenizer.pad_token_id)
    scorer = OnnxScorer(run_graph(run / "model", model))
    got, _ = scorer.score(data, 6, tokenizer.pad_token_id)
    assert np.abs(got - expected).max() < FP32_TOL
    batch = [data.input_ids[0], data.input_ids[-1][:5]]  # one long, one short: four pad slots at least
    ids = np.full((2, max(map(len, batch))), tokenizer.pad_token_id)
    mask = np.zeros_like(ids)
    for row, seq in enumerate(batch):
        ids[row, :len(seq)], mask[row, :len(seq)] = seq, 1
    logits, probabilities = scorer.run(ids, mask)
    assert logits.shape == (2, 1) and probabilities.shape == (2, 2)
    positive = 1 / (1 + np.exp(-logits[:, 0].astype(np.float64)))
    assert np.abs(probabilities[:, 1] - positive).max() < 1e-6 and np.abs(probabilities.sum(1) - 1).max() < 1e-6


def test_three_classes_score_like_torch(imdb_slice: dict[str, list[Example]], tmp_path: Path) -> None:
    """More than two classes: every class's probability [n, classes] and the cross-entropy, as evaluation.score."""
    import torch

    from sentitune.models.classifier import SentimentClassifier
    from sentitune.models.registry import ensure_pad_token, load_backbone, load_tokenizer, resolve

    source = resolve("gpt2-tiny-random").source
    tokenizer, backbone = ensure_pad_token(load_tokenizer(source), source), load_backbone(source)
    torch.manual_seed(3)
    model = SentimentClassifier(backbone, backbone.config.hidden_size, "mean", 3, 0.0).eval()
    model.labels = ["negative", "neutral", "positive"]
    examples = [Example(e.id, clean_text(e.text), i % 3) for i, e in enumerate(imdb_slice["test"][:24])]
    data = encode(examples, tokenizer, max_length=40)
    expected, torch_loss = score(model, data, 1, tokenizer.pad_token_id)
    scorer = OnnxScorer(export_onnx(model, tmp_path / "model.onnx"))
    got, onnx_loss = scorer.score(data, 5, tokenizer.pad_token_id)
    assert scorer.labels == model.labels and got.shape == expected.shape == (24, 3)
    assert expected.std(0).min() > 1e-3, "the reviews get different probabilities: the comparison can fail"
    assert np.abs(got - expected).max() < FP32_TOL and onnx_loss == pytest.approx(torch_loss, abs=FP32_TOL)
