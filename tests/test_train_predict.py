"""One short real LoRA run of the packaged MiniLM through the CLI, then everything a user does with it.

The run trains once per session (`conftest.minilm_lora_run`: a few optimizer steps on 48 short IMDb
reviews, 64 tokens each); the tests read its directory, reload the model two ways, re-evaluate and predict with it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import BATCH, EVAL_SIZE, MAX_LENGTH, TRAIN_SIZE, VAL_SIZE, run_cli, training_precision

from sentitune.config import load_config
from sentitune.data.batching import collate, encode
from sentitune.data.records import Example
from sentitune.data.text import clean_text
from sentitune.evaluation import score
from sentitune.models.classifier import pool
from sentitune.models.registry import resolve
from sentitune.models.saving import load_model
from sentitune.runs import RunDir

pytestmark = pytest.mark.numeric  # run again under the other precision by `make test`


@pytest.fixture(scope="module")
def trained(minilm_lora_run: tuple[Path, str]) -> tuple[Path, str]:
    return minilm_lora_run


@pytest.fixture(scope="module")
def run_dir(trained: tuple[Path, str]) -> Path:
    return trained[0]


@pytest.fixture(scope="module")
def metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def predictions(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "predictions.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def raw_text(imdb_slice: dict[str, list[Example]]) -> dict[str, str]:
    """Review id -> the text as it is in the archive (with its <br /> tags)."""
    return {e.id: e.text for split in imdb_slice.values() for e in split}


def test_train_prints_a_summary(trained: tuple[Path, str], metrics: dict[str, Any]) -> None:
    run, out = trained
    assert f"test set, {EVAL_SIZE} reviews (minilm, lora)" in out
    assert "untrained (baseline)" in out and "lora (trained)" in out
    assert f"{metrics['test']['accuracy']:.4f}" in out
    assert f"run directory: {run}" in out


def test_config_yaml_recreates_the_run(run_dir: Path) -> None:
    cfg = load_config(run_dir / "config.yaml")
    assert cfg.name == "cli-test" and cfg.model.spec == "minilm" and cfg.method.name == "lora"
    assert (cfg.data.train_size, cfg.data.val_size, cfg.data.eval_size) == (TRAIN_SIZE, VAL_SIZE, EVAL_SIZE)
    assert (cfg.data.max_length, cfg.train.batch_size, cfg.train.seed, cfg.train.lr) == (MAX_LENGTH, BATCH, 7, 0.002)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["method"]["lora"]["target_modules"] == ["query", "value"]


def test_log_and_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    everything = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    log = [r for r in everything if r["event"] != "train"]
    assert [r["event"] for r in log] == ["baseline", "validation", "final"]
    # Training-loss records (the report's curves): every train.log_every steps and at the epoch's end.
    steps = TRAIN_SIZE // BATCH
    curve = [r for r in everything if r["event"] == "train"]
    every = RunDir(run_dir).config().train.log_every
    assert [r["step"] for r in curve] == sorted({*range(every, steps + 1, every), steps})
    assert all(r["loss"] > 0 and r["lr"] >= 0 and r["phase"] == 1 for r in curve)
    assert everything.index(curve[-1]) < everything.index(log[1])  # the epoch's last loss, then its validation
    assert log[1]["n"] == VAL_SIZE and log[0]["n"] == log[2]["n"] == EVAL_SIZE
    assert metrics["test"] == {k: v for k, v in log[2].items() if k not in ("event", "split")}
    assert metrics["baseline"] == {k: v for k, v in log[0].items() if k not in ("event", "split")}
    assert metrics["data"]["train"] == {"n": TRAIN_SIZE, "label_0": TRAIN_SIZE // 2, "label_1": TRAIN_SIZE // 2}
    assert metrics["data"]["validation"]["n"] == VAL_SIZE and metrics["data"]["test"]["n"] == EVAL_SIZE
    for part in ("test", "baseline"):
        m = metrics[part]
        assert sum(map(sum, m["confusion_matrix"])) == EVAL_SIZE
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["roc_auc"] <= 1 and m["loss"] > 0
    # Trainable = LoRA A and B on query and value in every block, plus the 2-logit head.
    backbone_cfg = json.loads((Path(resolve("minilm").source) / "config.json").read_text())
    hidden, layers, r = backbone_cfg["hidden_size"], backbone_cfg["num_hidden_layers"], 8
    par = metrics["parameters"]
    assert par["trainable"] == layers * 2 * r * (hidden + hidden) + hidden * 2 + 2
    assert par["total"] > 22_000_000 and par["trainable_ratio"] == pytest.approx(par["trainable"] / par["total"])
    assert metrics["train_tokens"] > 0 and metrics["precision"] == training_precision()
    assert metrics["eval_precision"] == "fp32"  # the default: predictions that are the same on any CPU
    assert len(metrics["validation"]) == 1 and metrics["validation"][0]["step"] == TRAIN_SIZE // BATCH


def test_predictions_csv(predictions: list[dict[str, str]], metrics: dict[str, Any]) -> None:
    assert len(predictions) == EVAL_SIZE == metrics["test"]["n"]
    assert list(predictions[0]) == ["id", "label", "prob_positive", "pred", "words"]
    assert all(int(p["words"]) > 0 for p in predictions)  # review length, for the report's length bins
    assert all(p["id"].startswith("test/") for p in predictions)
    assert len({p["id"] for p in predictions}) == EVAL_SIZE
    correct = sum(int(p["pred"]) == int(p["label"]) for p in predictions)
    assert correct / EVAL_SIZE == pytest.approx(metrics["test"]["accuracy"])
    assert all(int(p["pred"]) == int(float(p["prob_positive"]) > 0.5) for p in predictions)


def _test_examples(predictions: list[dict[str, str]], raw_text: dict[str, str]) -> list[Example]:
    return [Example(p["id"], clean_text(raw_text[p["id"]]), int(p["label"])) for p in predictions]


def test_reloaded_model_scores_equal_the_saved_predictions(
    run_dir: Path, predictions: list[dict[str, str]], raw_text: dict[str, str]
) -> None:
    model, tokenizer = load_model(run_dir / "model")
    data = encode(_test_examples(predictions, raw_text), tokenizer, MAX_LENGTH)
    scores, _ = score(model, data, 8, tokenizer.pad_token_id)
    saved = [float(p["prob_positive"]) for p in predictions]
    assert scores.tolist() == pytest.approx(saved, abs=2e-6)
    assert max(saved) - min(saved) > 1e-3  # the scores differ between reviews: not a constant model


def test_adapter_loads_with_plain_peft(
    run_dir: Path, predictions: list[dict[str, str]], raw_text: dict[str, str]
) -> None:
    """Hugging Face tools read the saved adapter: PeftModel on the base model + our head gives the same scores."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    base_source = resolve("minilm").source
    peft_model = PeftModel.from_pretrained(AutoModel.from_pretrained(base_source), run_dir / "model" / "adapter")
    peft_model.eval()
    plain_base = AutoModel.from_pretrained(base_source).eval()
    head = load_file(str(run_dir / "model" / "head.safetensors"))
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    data = encode(_test_examples(predictions, raw_text), tokenizer, MAX_LENGTH)
    batch = collate(data, list(range(len(data))), tokenizer.pad_token_id)

    def probabilities(backbone: torch.nn.Module) -> list[float]:
        with torch.no_grad():
            hidden = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            logits = pool(hidden, batch["attention_mask"], "mean") @ head["weight"].T + head["bias"]
        return torch.softmax(logits, -1)[:, 1].tolist()

    saved = [float(p["prob_positive"]) for p in predictions]
    assert probabilities(peft_model) == pytest.approx(saved, abs=2e-6)
    assert probabilities(plain_base) != pytest.approx(saved, abs=1e-4)  # the adapter changed the backbone


def test_evaluate_command_reproduces_the_run(run_dir: Path, metrics: dict[str, Any]) -> None:
    code, out, err = run_cli(["evaluate", str(run_dir), "--no-progress"])
    assert code == 0, err
    assert f"test split, {EVAL_SIZE} reviews" in out and "saved model" in out
    result = json.loads((run_dir / "eval-test.json").read_text())
    for part, saved in (("model", metrics["test"]), ("baseline", metrics["baseline"])):
        assert result[part]["confusion_matrix"] == saved["confusion_matrix"], part
        for key in ("accuracy", "f1", "roc_auc", "loss"):
            assert result[part][key] == pytest.approx(saved[key], abs=1e-5), (part, key)
    with (run_dir / "predictions-test.csv").open(newline="") as f, (run_dir / "predictions.csv").open(newline="") as g:
        again = {r["id"]: float(r["prob_positive"]) for r in csv.DictReader(f)}
        first = {r["id"]: float(r["prob_positive"]) for r in csv.DictReader(g)}
    assert again.keys() == first.keys()
    assert all(again[k] == pytest.approx(first[k], abs=2e-6) for k in first)


def test_evaluate_validation_split(run_dir: Path) -> None:
    code, out, err = run_cli(["evaluate", str(run_dir), "--split", "validation", "--no-baseline", "--no-progress"])
    assert code == 0, err
    assert f"validation split, {VAL_SIZE} reviews" in out and "baseline" not in out


def test_predict_texts_and_json(run_dir: Path, predictions: list[dict[str, str]], raw_text: dict[str, str]) -> None:
    reviews = [raw_text[p["id"]] for p in predictions[:3]]
    code, out, err = run_cli(["predict", str(run_dir), *reviews, "--json"])
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == reviews
    for row, p in zip(rows, predictions[:3], strict=True):
        assert row["prob_positive"] == pytest.approx(float(p["prob_positive"]), abs=2e-6)
        assert row["label"] == ("positive" if p["pred"] == "1" else "negative")
    code, out, _ = run_cli(["predict", str(run_dir), "An utterly wonderful film."])
    assert code == 0 and out.rstrip().endswith("An utterly wonderful film.")
    assert out.split()[0] in ("positive", "negative")


def test_predict_from_txt_and_csv_files(
    run_dir: Path, tmp_path: Path, predictions: list[dict[str, str]], raw_text: dict[str, str]
) -> None:
    expected = [float(p["prob_positive"]) for p in predictions]
    reviews = [raw_text[p["id"]] for p in predictions]
    assert all("\n" not in r for r in reviews)
    txt = tmp_path / "reviews.txt"
    txt.write_text("\n".join(reviews) + "\n\n", encoding="utf-8")
    table = tmp_path / "reviews.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "body"], *[[p["id"], raw_text[p["id"]]] for p in predictions]])
    for args in (["--file", str(txt)], ["--file", str(table), "--text-column", "body"]):
        out_csv = tmp_path / "out.csv"
        code, out, err = run_cli(["predict", str(run_dir), *args, "--output", str(out_csv)])
        assert code == 0, err
        assert f"wrote {EVAL_SIZE} predictions to {out_csv}" in out
        with out_csv.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert [r["text"] for r in rows] == reviews
        assert [float(r["prob_positive"]) for r in rows] == pytest.approx(expected, abs=2e-6)


def test_predict_errors_are_one_line(run_dir: Path, tmp_path: Path) -> None:
    code, _, err = run_cli(["predict", str(run_dir)])
    assert code == 2 and err == "sentitune: error: predict: give reviews as arguments or with --file\n"
    bad = tmp_path / "bad.csv"
    bad.write_text("review\nGood.\n")
    code, _, err = run_cli(["predict", str(run_dir), "--file", str(bad)])
    assert code == 2 and "bad.csv:2: missing field 'text'" in err and err.count("\n") == 1
    short = tmp_path / "short.csv"
    short.write_text("id,text\n1,Good.\n2\n")  # row 3 has no text field
    code, _, err = run_cli(["predict", str(run_dir), "--file", str(short)])
    assert code == 2 and "short.csv:3: missing field 'text'" in err
    code, _, err = run_cli(["predict", str(tmp_path), "Good."])
    assert code == 2 and "not a run directory" in err


@pytest.mark.heavy_in_emulation
def test_same_config_trains_to_identical_metrics(
    run_dir: Path, metrics: dict[str, Any], tmp_path: Path, imdb_slice_archive: Path
) -> None:
    again = tmp_path / "again"
    code, _, err = run_cli(["train", "--config", str(run_dir / "config.yaml"), "--out", str(again), "--no-progress"])
    assert code == 0, err
    second = json.loads((again / "metrics.json").read_text())
    for key in ("test", "baseline", "validation", "parameters", "data", "train_tokens"):
        assert second[key] == metrics[key], key
    assert (again / "predictions.csv").read_text() == (run_dir / "predictions.csv").read_text()
