"""Target-dependent sentiment and N-class labels: readers, metrics, how the target reaches the model,
and a 3-class run saved, reloaded and asked to predict (real files from ../shared, real tokenizers)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import LEARNS_NOTHING_OK, THREE_CLASSES, assert_one_line_error, run_cli, write_target_lines

from sentitune.config import ConfigError, load_config
from sentitune.data.batching import TargetInput, encode
from sentitune.data.records import Example
from sentitune.data.sources import load_splits
from sentitune.data.tabular import read_table
from sentitune.data.targets import read_target_lines
from sentitune.errors import DataError
from sentitune.models.registry import load_tokenizer, resolve

SETS = {  # file -> instances, as the README of each set states them
    "semeval14/Restaurants_Train.xml.seg": 3608, "semeval14/Restaurants_Test_Gold.xml.seg": 1120,
    "semeval14/Laptops_Train.xml.seg": 2328, "semeval14/Laptops_Test_Gold.xml.seg": 638,
    "acl-14-short-data/train.raw": 6248, "acl-14-short-data/test.raw": 692,
}


@pytest.mark.parametrize("name", sorted(SETS))
def test_three_line_sets_read_whole(target_data: Path, name: str) -> None:
    examples = read_target_lines(target_data / name, THREE_CLASSES)
    assert len(examples) == SETS[name]
    raw = (target_data / name).read_text(encoding="utf-8").splitlines()
    for i, e in enumerate(examples):
        assert e.span is not None and e.text[e.span[0]:e.span[1]] == e.target == raw[3 * i + 1].strip()
        assert "$T$" not in e.text
        assert THREE_CLASSES[e.label] == {"-1": "negative", "0": "neutral", "1": "positive"}[raw[3 * i + 2].strip()]
    assert set(Counter(e.label for e in examples)) == {0, 1, 2}


@pytest.fixture
def slice_file(tmp_path: Path, target_data: Path) -> list[str]:
    lines = (target_data / "semeval14/Restaurants_Test_Gold.xml.seg").read_text(encoding="utf-8").splitlines()
    return lines[:12]  # four instances


@pytest.mark.parametrize("case, expect", [
    ("missing line", ["bad.seg:10", "2 of its 3 lines"]),
    ("label outside the set", ["bad.seg:6", "'2'", "-1, 0, 1"]),
    ("sentence without $T$", ["bad.seg:4", "no $T$ slot"]),
])
def test_malformed_instances_are_one_line_errors(tmp_path: Path, slice_file: list[str], case: str,
                                                 expect: list[str]) -> None:
    lines = list(slice_file)
    if case == "missing line":
        lines = lines[:11]  # the last instance loses its label line
    elif case == "label outside the set":
        lines[5] = "2"
    else:
        lines[3] = lines[3].replace("$T$", "the thing")
    bad = tmp_path / "bad.seg"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_target_lines(bad, THREE_CLASSES)
    assert "\n" not in str(err.value)
    for part in expect:
        assert part in str(err.value)
    # the same through the CLI: exit 2 and one line naming the file and line
    code, _, stderr = run_cli(["train", "--source", str(bad), "--set", "data.labels=[negative,neutral,positive]",
                               "--out", str(tmp_path / "run"), "--no-progress"])
    assert_one_line_error(code, stderr, expect)


def test_labels_must_name_the_polarities(tmp_path: Path, slice_file: list[str]) -> None:
    path = tmp_path / "x.seg"
    path.write_text("\n".join([*slice_file[:3], slice_file[3], slice_file[4], "0"]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"x.seg:6: label '0' is not one of .* \(data.labels\)"):
        read_target_lines(path, ["negative", "positive"])  # a neutral instance with binary labels


def test_table_targets_with_offsets(tmp_path: Path) -> None:
    rows = [
        {"text": "The food was cold but the food court was fun", "target": "food", "start": 26, "end": 30,
         "label": "positive"},
        {"text": "The food was cold but the food court was fun", "target": "food", "label": 0},
        {"text": "Staff fine.", "target": "staff", "label": "NEUTRAL"},
    ]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows[:1]) + "\n", encoding="utf-8")
    (first,) = read_table(jsonl, labels=THREE_CLASSES, target_column="target", offset_columns=("start", "end"))
    assert first.span == (26, 30) and first.label == 2
    csv_path = tmp_path / "t.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["text", "target", "label"])
        w.writeheader()
        w.writerows([{k: r[k] for k in ("text", "target", "label")} for r in rows[1:]])
    second, third = read_table(csv_path, labels=THREE_CLASSES, target_column="target")
    assert second.span == (4, 8) and second.label == 0  # no offsets: the first occurrence
    assert third.target == "Staff" and third.span == (0, 5) and third.label == 1  # case-insensitive match
    # offsets that do not point at the target, a target not in the text, a label outside the set
    jsonl.write_text(json.dumps({**rows[0], "start": 0, "end": 4}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"t.jsonl:1: text\[0:4\] is 'The ', not the target 'food'"):
        read_table(jsonl, labels=THREE_CLASSES, target_column="target", offset_columns=("start", "end"))
    jsonl.write_text(json.dumps({"text": "Nice.", "target": "soup", "label": 1}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"t.jsonl:1: field 'target': target 'soup' does not occur"):
        read_table(jsonl, labels=THREE_CLASSES, target_column="target")
    jsonl.write_text(json.dumps({"text": "Nice soup.", "target": "soup", "label": 3}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"t.jsonl:1: field 'label': label 3 is not one of negative, neutral"):
        read_table(jsonl, labels=THREE_CLASSES, target_column="target")


def test_cleaning_keeps_the_span_on_the_target(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rows = []
    for w, lab in (("soup", 2), ("wine", 0), ("bread", 1)):
        text = f"Bad  soup.<br /><br />Good {w} and good {w}!"
        rows += [{"text": text, "target": w, "start": text.rindex(w), "end": text.rindex(w) + len(w), "label": lab}]
    text = "The  delete  key sticks.<br />Fine screen."  # a target whose own spaces cleaning squeezes
    rows += [{"text": text, "target": "delete  key", "start": 5, "end": 16, "label": 0}]
    rows *= 4
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    cfg = load_config(None, [f"data.source={path}", "data.labels=[negative,neutral,positive]",
                             "data.target_column=target", "data.target_start_column=start",
                             "data.target_end_column=end", "data.val_size=0"])
    splits = load_splits(cfg.data, 0)
    for e in splits.train + splits.test:
        assert "<br" not in e.text and e.span is not None and e.text[e.span[0]:e.span[1]] == e.target
        if e.target != "delete key":
            assert e.span[0] > e.text.index("and good")  # the last occurrence, as the offsets said


def test_config_checks_labels() -> None:
    with pytest.raises(ConfigError, match="data.labels: need two or more distinct"):
        load_config(None, ["data.labels=[positive]"])
    with pytest.raises(ConfigError, match="sigmoid is for two classes"):
        load_config(None, ["data.labels=[a,b,c]", "model.head=sigmoid"])
    with pytest.raises(DataError, match="data.source=imdb is binary"):
        load_splits(load_config(None, ["data.labels=[a,b,c]"]).data, 0)


EXAMPLE = Example("x", "The photobook menu was a cute touch , certainly helped my group pick the pork chop , "
                  "and noodle dishes that we all ordered and liked a lot .", 2, target="pork chop", span=(73, 82))


@pytest.mark.parametrize("spec", ["minilm", "smollm2-135m"])
def test_each_way_of_presenting_the_target(spec: str) -> None:
    assert EXAMPLE.text[73:82] == "pork chop"
    tok = load_tokenizer(resolve(spec).source)
    target_ids = tok("pork chop", add_special_tokens=False)["input_ids"]
    for how, length in (("pair", 12), ("markers", 14), ("prompt", 16)):
        full = encode([EXAMPLE], tok, 512, target=TargetInput(how)).input_ids[0]
        cut = encode([EXAMPLE], tok, length, target=TargetInput(how)).input_ids[0]
        assert len(cut) == length < len(full)
        text = tok.decode(cut, skip_special_tokens=True).lower().strip()
        assert "pork chop" in text  # the target survives any cut
        if how == "pair" and tok.sep_token:
            assert cut[-len(target_ids) - 1:-1] == target_ids  # [CLS] sentence [SEP] target [SEP]
            assert tok.decode(full).count(tok.sep_token) == 2
        if how == "markers":
            marked = text.replace("< t >", "<t>").replace("< / t >", "</t>")
            left, right = marked.split("<t> pork chop </t>")
            assert "the" in left and right.strip(" ,")  # context kept on both sides of the target
        if how == "prompt":
            assert text.endswith("the sentiment toward pork chop is")
            assert text.startswith("the photobook")  # head truncation: the start of the sentence
    # tail truncation keeps the end of the sentence, never the prompt's words
    tail = tok.decode(encode([EXAMPLE], tok, 16, "tail", target=TargetInput("prompt")).input_ids[0],
                      skip_special_tokens=True).lower()
    assert "liked a lot" in tail and "photobook" not in tail and tail.strip().endswith("pork chop is")


def test_three_class_run_saves_reloads_and_predicts(tmp_path: Path, target_data: Path) -> None:
    """A probe on 3-class restaurants: predictions.csv has a probability per class; the saved model
    reloads with its class names and `predict --target` gives the same probabilities."""
    train = read_target_lines(target_data / "semeval14/Restaurants_Train.xml.seg", THREE_CLASSES)
    test = read_target_lines(target_data / "semeval14/Restaurants_Test_Gold.xml.seg", THREE_CLASSES)
    train_file = write_target_lines(tmp_path / "train.seg", [e for e in train if len(e.text) < 90][:150])
    test_file = write_target_lines(tmp_path / "test.seg", [e for e in test if len(e.text) < 90][:40])
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "--source", str(train_file), "--set", f"data.test_path={test_file}",
                              "--set", "data.labels=[negative,neutral,positive]", "--model", "minilm",
                              "--method", "probe", "--epochs", "2", "--lr", "0.01", "--max-length", "64",
                              "--set", LEARNS_NOTHING_OK, "--out", str(run), "--no-progress"])
    assert code == 0, err
    assert "macro_f1" in out and "f1_neutral" in out and "rows: true, columns: predicted" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["labels"] == THREE_CLASSES and len(metrics["test"]["confusion_matrix"]) == 3
    with (run / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "target", "label", "prob_negative", "prob_neutral", "prob_positive", "pred",
                             "words"]
    probs = np.array([[float(r[f"prob_{n}"]) for n in THREE_CLASSES] for r in rows])
    assert probs.sum(1) == pytest.approx(np.ones(len(rows)), abs=1e-5)
    assert [int(r["pred"]) for r in rows] == probs.argmax(1).tolist()
    assert metrics["test"]["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == [int(r["label"]) for r in rows]))
    meta = json.loads((run / "model" / "sentitune.json").read_text())
    assert meta["labels"] == THREE_CLASSES and meta["num_logits"] == 3

    by_id = {e.id: e for e in read_target_lines(test_file, THREE_CLASSES)}
    some = rows[:5]
    args = ["predict", str(run), *(by_id[r["id"]].text for r in some), "--json"]
    for r in some:
        args += ["--target", r["target"]]
    code, out, err = run_cli(args)
    assert code == 0, err
    got = [json.loads(line) for line in out.splitlines()]
    for r, g in zip(some, got, strict=True):
        assert g["target"] == r["target"]
        assert [g["probs"][n] for n in THREE_CLASSES] == pytest.approx([float(r[f"prob_{n}"]) for n in THREE_CLASSES],
                                                                       abs=2e-6)
        assert g["label"] == THREE_CLASSES[int(r["pred"])]
    # a target-dependent run refuses texts without targets, with one line
    code, _, err = run_cli(["predict", str(run), "The soup was cold."])
    assert_one_line_error(code, err, ["needs one target per text"])
    # evaluate reproduces the saved numbers
    code, out, err = run_cli(["evaluate", str(run), "--no-baseline", "--no-progress"])
    assert code == 0, err
    again = json.loads((run / "eval-test.json").read_text())["model"]
    assert again["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert again["macro_f1"] == pytest.approx(metrics["test"]["macro_f1"])


@pytest.fixture(scope="module")
def tiny_target_files(tmp_path_factory: pytest.TempPathFactory, target_data: Path) -> tuple[Path, Path]:
    """A 3-class slice of SemEval-2014 restaurants, every class present, short sentences."""
    folder = tmp_path_factory.mktemp("targets")
    train = read_target_lines(target_data / "semeval14/Restaurants_Train.xml.seg", THREE_CLASSES)
    test = read_target_lines(target_data / "semeval14/Restaurants_Test_Gold.xml.seg", THREE_CLASSES)

    def per_class(examples: list[Example], n: int) -> list[Example]:
        return [e for c in range(3) for e in [x for x in examples if x.label == c and len(x.text) < 80][:n]]

    return (write_target_lines(folder / "train.seg", per_class(train, 10)),
            write_target_lines(folder / "test.seg", per_class(test, 4)))


@pytest.mark.numeric
@pytest.mark.parametrize("method, extra", [
    ("probe", ["train.feature_cache=true"]),
    ("partial", ["method.freeze_layers=1", "data.target_input=markers"]),
    ("full", []),
    ("lora", []),
    ("two-phase", ['method.phases=[{method: full, epochs: 1, lr: 0.005}, {method: probe, epochs: 1, lr: 0.02}]']),
])
def test_every_method_trains_on_targets(method: str, extra: list[str], tiny_target_files: tuple[Path, Path],
                                        tmp_path: Path) -> None:
    """Each trained method on the decoder code path (GPT-2, the target in a prompt, or markers): a 3-logit
    head, a probability per class in predictions.csv, and the saved run predicting the same numbers."""
    from sentitune.inference import Predictor
    from sentitune.training import train

    train_file, test_file = tiny_target_files
    cfg = load_config(None, [f"data.source={train_file}", f"data.test_path={test_file}",
                             "data.labels=[negative,neutral,positive]", "data.val_size=6", "data.max_length=40",
                             "model.spec=gpt2-tiny-random", f"method.name={method}", "train.epochs=1",
                             "train.batch_size=8", "train.lr=0.005", "train.checkpoint_every=null", LEARNS_NOTHING_OK,
                             f"train.feature_cache_dir={tmp_path / 'features'}", *extra])
    metrics = train(cfg, tmp_path / "run")
    assert metrics["test"]["n"] == 12 and len(metrics["test"]["confusion_matrix"]) == 3
    with (tmp_path / "run" / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    saved = [[float(r[f"prob_{n}"]) for n in THREE_CLASSES] for r in rows]
    by_id = {e.id: e for e in read_target_lines(test_file, THREE_CLASSES)}
    predictor = Predictor(tmp_path / "run")
    assert predictor.scorer.model.head.out_features == 3 and predictor.scorer.model.labels == THREE_CLASSES
    got = predictor.predict([by_id[r["id"]].text for r in rows], targets=[r["target"] for r in rows])
    tolerance = 2e-3 if method == "probe" else 2e-6  # the probe scores test from bf16 cached states
    for p, s in zip(got, saved, strict=True):
        assert [p.probs[n] for n in THREE_CLASSES] == pytest.approx(s, abs=tolerance)
