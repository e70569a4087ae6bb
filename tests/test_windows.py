"""A long review read as several windows whose logits are pooled (data.windows, model.window_pooling).

Encoding is checked on the real MiniLM tokenizer and real IMDb reviews; pooling by hand; the classifier on
the packaged models (MiniLM, and the tiny random GPT-2 for a decoder without special tokens). Two short
real runs go through the CLI (LoRA with mean pooling; two phases with attention pooling), are saved and
read back by Predictor and `sentitune predict`; one is interrupted and resumed.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import assert_one_line_error, run_cli

from sentitune.config import ConfigError, load_config
from sentitune.data.batching import Encoded, collate, encode, encoding_args, window_starts
from sentitune.data.records import Example
from sentitune.data.sources import load_splits
from sentitune.errors import RunError
from sentitune.evaluation import score
from sentitune.features import Features, build_cache, prefix_of
from sentitune.inference import Predictor
from sentitune.models.classifier import SentimentClassifier, pool, pool_windows
from sentitune.models.methods import build_classifier, method
from sentitune.models.registry import load_backbone, load_tokenizer, resolve
from sentitune.models.saving import WINDOW_SCORER, load_model
from sentitune.models.split import prefix_forward

# `make test` runs the tests marked numeric again under the precision auto did not pick (emulated bf16 on a CPU
# without it: slow), so only the ones whose numbers depend on the precision carry the mark.

MAX_LENGTH, WINDOWS = 24, 3  # 22 review tokens a window: the shortest IMDb reviews take 1, 2, 3 windows or more
SHORT = ["Great film.", "Dull.", "I loved every minute of it."]  # one window each


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer(resolve("minilm").source)


@pytest.fixture(scope="module")
def reviews(imdb_slice: dict[str, list[Example]]) -> list[Example]:
    """20 real reviews of both classes, 11 to 80 tokens (the slice is sorted by length within each class)."""
    return imdb_slice["train"][::6]


def body(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------------------- encoding


def test_window_starts_by_hand() -> None:
    assert window_starts(10, 14, 3) == [0]  # fits: one window
    assert window_starts(28, 14, 3) == [0, 14]  # two windows, no overlap
    assert window_starts(30, 14, 3) == [0, 14, 16]  # the last window ends at the last token
    assert window_starts(100, 14, 3) == [0, 14, 86]  # too long: head windows, then the tail
    assert window_starts(30, 14, 5, stride=7) == [0, 7, 14, 16]
    assert window_starts(15, 14, 3, stride=7) == [0, 1]


@pytest.mark.parametrize("stride", [None, 7])
def test_windows_cut_real_reviews(tokenizer: Any, reviews: list[Example], stride: int | None) -> None:
    """Every window is a normally encoded piece ([CLS] ... [SEP]); together they cover the review, or its head
    windows and its tail when it is longer than the windows can hold."""
    max_length, windows, size = 16, 3, 14
    step = stride or size
    data = encode(reviews, tokenizer, max_length=max_length, windows=windows, stride=stride)
    assert len(data) == len(reviews) and data.labels == [e.label for e in reviews]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    seen = {"fits": 0, "cut": 0, "multi": 0}
    for i, e in enumerate(reviews):
        ids = body(tokenizer, e.text)
        rows = [data.input_ids[r] for r in data.rows(i)]
        assert all(data.review[r] == i for r in data.rows(i))
        assert all(r[0] == cls and r[-1] == sep and len(r) <= max_length for r in rows)
        pieces = [r[1:-1] for r in rows]
        needed = 1 if len(ids) <= size else 1 + -(-(len(ids) - size) // step)
        assert len(rows) == min(needed, windows)
        if len(ids) <= size:
            assert pieces == [ids]
        else:  # full windows: the first from the first token, the last to the last one
            assert pieces[0] == ids[:size] and pieces[-1] == ids[-size:]
        for k, piece in enumerate(pieces[:-1]):  # head windows: every `step` tokens from the start
            assert piece == ids[k * step : k * step + size]
        if needed <= windows:  # every token is in a window
            covered = set()
            for k, piece in enumerate(pieces[:-1]):
                covered |= set(range(k * step, k * step + len(piece)))
            covered |= set(range(len(ids) - len(pieces[-1]), len(ids)))
            assert covered == set(range(len(ids)))
        if stride and len(pieces) > 2:  # overlap: the next window starts `stride` tokens later
            assert pieces[1][: size - stride] == pieces[0][stride:]
        seen["fits" if len(ids) <= size else "cut" if needed > windows else "multi"] += 1
    assert all(seen.values()), seen  # the slice has reviews of all three kinds


def test_one_window_encodes_as_before(tokenizer: Any, reviews: list[Example]) -> None:
    """windows=1 is today's truncation; a review that fits is the same row whatever the windows."""
    cfg = load_config(None, [f"data.max_length={MAX_LENGTH}", "data.truncation=tail"])
    one = encode(reviews, tokenizer, **encoding_args(cfg.data, False))
    assert one.review is None and "windows" not in encoding_args(cfg.data, False)
    assert one.input_ids == [[tokenizer.cls_token_id, *body(tokenizer, e.text)[-(MAX_LENGTH - 2):],
                              tokenizer.sep_token_id] for e in reviews]
    many = encode(reviews, tokenizer, max_length=MAX_LENGTH, windows=WINDOWS)
    for i, e in enumerate(reviews):
        if len(body(tokenizer, e.text)) <= MAX_LENGTH - 2:
            assert [many.input_ids[r] for r in many.rows(i)] == [one.input_ids[i]]


def test_batches_hold_whole_reviews(tokenizer: Any, reviews: list[Example]) -> None:
    data = encode(reviews, tokenizer, max_length=MAX_LENGTH, windows=WINDOWS)
    batch = collate(data, [3, 0, 5], tokenizer.pad_token_id)
    rows = [*data.rows(3), *data.rows(0), *data.rows(5)]
    assert batch["rows"].tolist() == rows and len(batch["labels"]) == 3
    assert batch["review"].tolist() == [k for k, i in enumerate([3, 0, 5]) for _ in data.rows(i)]
    assert batch["attention_mask"].sum(1).tolist() == [len(data.input_ids[r]) for r in rows]
    assert data.lengths()[3] == sum(len(data.input_ids[r]) for r in data.rows(3))


def test_window_settings_are_checked() -> None:
    cases = {
        "data.windows": ["data.windows=0"],
        "data.window_stride: needs data.windows > 1": ["data.window_stride=8"],
        "model.window_pooling: attention": ["model.window_pooling=attention"],
        "model.window_pooling: 'sum'": ["data.windows=2", "model.window_pooling=sum"],
        "data.window_stride: 300": ["data.windows=2", "data.window_stride=300"],
        "data.truncation: tail": ["data.windows=2", "data.truncation=tail"],
        "data.windows: tfidf": ["data.windows=2", "method.name=tfidf"],
    }
    for expect, overrides in cases.items():
        with pytest.raises(ConfigError, match=expect.replace("(", r"\(")):
            load_config(None, overrides)


def test_refused_at_encoding(tokenizer: Any) -> None:
    """A stride longer than a window's review tokens (known only with the tokenizer), and targets."""
    with pytest.raises(ConfigError, match=r"data.window_stride: 23 .* 22 review tokens"):
        encode([Example("a", "A fine film.", 1)], tokenizer, max_length=MAX_LENGTH, windows=2, stride=23)
    with pytest.raises(ConfigError, match="data.windows"):
        encode([Example("a", "The food was good.", 1, target="food", span=(4, 8))], tokenizer, max_length=32,
               windows=2)


# ---------------------------------------------------------------------------- pooling


def test_pool_windows_by_hand() -> None:
    logits = torch.tensor([[1.0, 2.0], [3.0, 0.0], [5.0, 5.0], [0.0, -1.0]])
    review = torch.tensor([0, 0, 1, 2])  # review 0: two windows; 1 and 2: one each
    assert pool_windows(logits, review, "mean").tolist() == [[2.0, 1.0], [5.0, 5.0], [0.0, -1.0]]
    assert pool_windows(logits, review, "max").tolist() == [[3.0, 2.0], [5.0, 5.0], [0.0, -1.0]]
    weights = torch.tensor([0.0, float(torch.log(torch.tensor(3.0))), 7.0, -9.0])  # review 0: shares 1/4, 3/4
    torch.testing.assert_close(pool_windows(logits, review, "attention", weights),
                               torch.tensor([[2.5, 0.5], [5.0, 5.0], [0.0, -1.0]]))
    # another review's rows (values, count) never reach review 0
    other = pool_windows(torch.cat([logits[:2], torch.tensor([[9.0, -9.0]] * 3)]), torch.tensor([0, 0, 1, 1, 1]),
                         "attention", torch.tensor([*weights[:2].tolist(), 50.0, -50.0, 0.0]))
    assert torch.equal(other[0], pool_windows(logits, review, "attention", weights)[0])


@pytest.fixture(scope="module")
def gpt2_windows(imdb_slice: dict[str, list[Example]]) -> tuple[SentimentClassifier, Encoded, int]:
    """A decoder (no special tokens, last-token pooling) with attention pooling, scorer set to random values."""
    cfg = load_config(None, ["model.spec=gpt2-tiny-random", "method.name=probe", "data.windows=3",
                             "data.max_length=16", "model.window_pooling=attention"])
    resolved = resolve(cfg.model.spec)
    tokenizer = load_tokenizer(resolved.source)
    model = build_classifier(cfg, resolved, tokenizer.pad_token_id).eval()
    with torch.no_grad():
        model.window_scorer.weight.normal_(generator=torch.Generator().manual_seed(0))
    data = encode(imdb_slice["test"][::5], tokenizer, **encoding_args(cfg.data, True))
    assert len(data.input_ids) > len(data), "some reviews must have several windows"
    return model, data, tokenizer.pad_token_id


@pytest.mark.numeric
def test_score_does_not_depend_on_the_batch(gpt2_windows: tuple[SentimentClassifier, Encoded, int]) -> None:
    """A review alone, in one batch with all the others, or in another order: the same probability."""
    model, data, pad = gpt2_windows
    alone = score(model, data, 1, pad)[0]
    together = score(model, data, len(data), pad)[0]
    order = list(reversed(range(len(data))))
    rows = [r for i in order for r in data.rows(i)]
    flipped = Encoded([data.ids[i] for i in order], [data.input_ids[r] for r in rows], [data.labels[i] for i in order],
                      [k for k, i in enumerate(order) for _ in data.rows(i)])
    shuffled = score(model, flipped, 4, pad)[0][order]
    assert len(set(alone.round(6))) > 1, "reviews must score differently for this test to mean anything"
    torch.testing.assert_close(torch.tensor(together), torch.tensor(alone), rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.tensor(shuffled), torch.tensor(alone), rtol=0, atol=1e-6)


@pytest.mark.numeric
def test_loss_is_per_review_and_trains_the_scorer(gpt2_windows: tuple[SentimentClassifier, Encoded, int]) -> None:
    """The loss of a batch is the mean over reviews of their pooled logits' loss, computed here by hand
    (softmax of the scorer over each review's windows); its gradient reaches the scorer."""
    model, data, pad = gpt2_windows
    many = next(i for i in range(len(data)) if len(data.rows(i)) == 3)
    one = next(i for i in range(len(data)) if len(data.rows(i)) == 1)
    batch = collate(data, [many, one], pad)
    method("probe").apply(model, load_config().method)
    assert model.window_scorer.weight.requires_grad
    logits = model(batch["input_ids"], batch["attention_mask"], review=batch["review"])
    loss = model.loss(logits, batch["labels"])
    loss.backward()
    with torch.no_grad():
        hidden = model.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        pooled = pool(hidden, batch["attention_mask"], model.pooling)
        rows, weights = model.head(pooled), model.window_scorer(pooled)[:, 0]
        by_hand = []
        for r, rows_of in ((0, slice(0, 3)), (1, slice(3, 4))):
            share = torch.softmax(weights[rows_of], 0)
            z = (share[:, None] * rows[rows_of]).sum(0)
            by_hand.append(torch.nn.functional.cross_entropy(z[None], batch["labels"][r : r + 1]))
    assert loss.item() == pytest.approx(((by_hand[0] + by_hand[1]) / 2).item(), abs=1e-6)
    assert model.window_scorer.weight.grad is not None and model.window_scorer.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_feature_cache_holds_windows_as_rows(tokenizer: Any, reviews: list[Example], tmp_path: Path) -> None:
    """The cached prefix of a windowed batch is the prefix of exactly its rows, in order."""
    backbone = load_backbone(resolve("minilm").source).eval()
    data = encode(reviews, tokenizer, max_length=MAX_LENGTH, windows=WINDOWS)
    cache = build_cache(backbone, data, 2, tokenizer.pad_token_id, root=tmp_path)
    batch = collate(data, [7, 2, 4], tokenizer.pad_token_id)
    states = prefix_of(Features(2, cache, 0.0), batch, torch.device("cpu")).states
    with torch.no_grad():
        direct = prefix_forward(backbone, batch["input_ids"], batch["attention_mask"], 2)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(states[real], direct[real], rtol=1e-2, atol=2e-2)  # bf16 on disk


# ---------------------------------------------------------------------------- real runs through the CLI


def train_args(archive: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "minilm", "--method", "lora", "--data", str(archive), "--train-size", "24",
            "--val-size", "8", "--eval-size", "16", "--max-length", str(MAX_LENGTH), "--windows", str(WINDOWS),
            "--batch-size", "8", "--epochs", "2", "--lr", "0.005", "--seed", "3", "--set", "train.baseline=false",
            "--set", "train.checkpoint_every=1", "--set", "method.lora.target_modules=[query,value]",
            "--out", str(out), "--no-progress", *extra]


@pytest.fixture(scope="module")
def mean_run(tmp_path_factory: pytest.TempPathFactory, imdb_slice_archive: Path) -> Path:
    run = tmp_path_factory.mktemp("windows") / "mean"
    code, _, err = run_cli(train_args(imdb_slice_archive, run))
    assert code == 0, err
    return run


@pytest.fixture(scope="module")
def attention_run(tmp_path_factory: pytest.TempPathFactory, imdb_slice_archive: Path) -> Path:
    run = tmp_path_factory.mktemp("windows") / "attention"
    phases = "method.phases=[{method: lora, epochs: 1, lr: 0.005}, {method: probe, epochs: 1, lr: 0.05}]"
    code, _, err = run_cli(train_args(imdb_slice_archive, run, "--method", "two-phase", "--set", phases,
                                      "--set", "model.window_pooling=attention"))
    assert code == 0, err
    return run


def saved_probabilities(run: Path) -> tuple[list[str], list[float]]:
    """The run's test reviews (raw text, as a user would pass them) and predictions.csv's probabilities."""
    cfg = load_config(run / "config.yaml")
    test = load_splits(cfg.data, cfg.train.seed).test
    with (run / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [e.id for e in test]
    return [e.text for e in test], [float(r["prob_positive"]) for r in rows]


@pytest.mark.parametrize("which", ["mean_run", "attention_run"])
def test_saved_run_predicts_what_it_tested(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Predictor and `sentitune predict` read the folder's window settings and give predictions.csv's numbers."""
    run = request.getfixturevalue(which)
    meta = json.loads((run / "model" / "sentitune.json").read_text())
    pooling = "mean" if which == "mean_run" else "attention"
    assert meta["window_pooling"] == pooling and meta["preprocessing"]["windows"] == WINDOWS
    assert (run / "model" / WINDOW_SCORER).exists() == (pooling == "attention")
    assert f"up to {WINDOWS} windows" in (run / "model" / "README.md").read_text()
    texts, expected = saved_probabilities(run)
    predictor = Predictor(run / "model")  # the model folder on its own
    got = [p.prob_positive for p in predictor.predict(texts, batch_size=5)]
    assert got == pytest.approx(expected, abs=2e-6)
    assert len(set(round(p, 4) for p in expected)) > 1, "the run must score reviews differently"
    file = tmp_path / "reviews.txt"
    file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    code, _, err = run_cli(["predict", str(run), "--file", str(file), "--output", str(tmp_path / "out.csv"),
                            "--batch-size", "3"])
    assert code == 0, err
    with (tmp_path / "out.csv").open(newline="") as f:
        assert [float(r["prob_positive"]) for r in csv.DictReader(f)] == pytest.approx(expected, abs=2e-6)


def test_attention_scorer_is_trained_saved_and_loaded(attention_run: Path) -> None:
    """The scorer starts at zero (uniform weights): non-zero after training; its saved weights are what predict
    uses (change them and the multi-window reviews change, a one-window review does not)."""
    model, _ = load_model(attention_run / "model")
    assert model.window_scorer is not None and model.window_scorer.weight.abs().sum() > 0
    predictor = Predictor(attention_run)
    texts, _ = saved_probabilities(attention_run)
    before = [p.prob_positive for p in predictor.predict([*texts, *SHORT])]
    with torch.no_grad():
        predictor.scorer.model.window_scorer.weight.mul_(-3)
    after = [p.prob_positive for p in predictor.predict([*texts, *SHORT])]
    assert after[len(texts):] == before[len(texts):]  # one window: its weight is 1 whatever the scorer says
    assert any(abs(a - b) > 1e-4 for a, b in zip(after[: len(texts)], before[: len(texts)], strict=True))


def test_attention_folder_without_its_scorer_is_refused(attention_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = shutil.copytree(attention_run / "model", tmp_path / "model")
    (copy / WINDOW_SCORER).unlink()
    with pytest.raises(RunError, match=f"{WINDOW_SCORER}: missing"):
        load_model(copy)


@pytest.mark.numeric
@pytest.mark.heavy_in_emulation
def test_a_review_in_one_window_scores_as_with_one_window(mean_run: Path, tokenizer: Any) -> None:
    """Same trained weights: a review that fits in one window gets exactly the probability it gets when the
    model reads it as a one-window run would."""
    model, _ = load_model(mean_run / "model")
    cfg = load_config(mean_run / "config.yaml")
    texts, _ = saved_probabilities(mean_run)
    examples = [Example(str(i), t, 0) for i, t in enumerate([*texts, *SHORT])]
    windowed = encode(examples, tokenizer, **encoding_args(cfg.data, False))
    single = encode(examples, tokenizer, max_length=MAX_LENGTH)
    fits = [i for i in range(len(examples)) if len(windowed.rows(i)) == 1]
    assert len(fits) >= len(SHORT) and len(fits) < len(examples)
    a, b = score(model, windowed, 1, tokenizer.pad_token_id)[0], score(model, single, 1, tokenizer.pad_token_id)[0]
    assert a[fits].tolist() == b[fits].tolist()
    assert a.tolist() != b.tolist()  # the longer reviews do read more than one window


@pytest.mark.numeric
@pytest.mark.heavy_in_emulation
def test_interrupted_windowed_run_resumes_to_the_same_result(mean_run: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C at the 4th of 6 optimizer steps (epoch 2), then --resume: the uninterrupted run's results."""
    real_clip, calls = torch.nn.utils.clip_grad_norm_, {"n": 0}

    def clip(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_clip(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    from sentitune.training import Interrupted, train

    cfg = load_config(mean_run / "config.yaml")
    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "run")
    monkeypatch.undo()
    resumed = train(cfg, tmp_path / "run", resume=True)
    expected = json.loads((mean_run / "metrics.json").read_text())
    for key in ("test", "validation", "train_tokens"):
        assert resumed[key] == expected[key], key
    assert (tmp_path / "run" / "predictions.csv").read_text() == (mean_run / "predictions.csv").read_text()


def test_export_and_onnx_refuse_a_windowed_run(mean_run: Path, tmp_path: Path) -> None:
    for fmt in ("hf", "onnx"):
        code, _, err = run_cli(["export", str(mean_run), "--format", fmt, "--out", str(tmp_path / fmt)])
        assert_one_line_error(code, err, ["windows", "reads one window"])
        assert not (tmp_path / fmt).exists()
    code, _, err = run_cli(["predict", str(mean_run), "Great film.", "--backend", "onnx"])
    assert_one_line_error(code, err, ["data.windows=1"])


def test_feature_cache_trains_windowed_probe(imdb_slice_archive: Path, tmp_path: Path) -> None:
    """train.feature_cache with windows: the cache holds the windows; the run's test pass (from the bf16 cache)
    and predict (recomputing the model) agree as closely as with one window (docs/PERFORMANCE.md)."""
    from sentitune.training import train

    cfg = load_config(None, ["model.spec=gpt2-tiny-random", "method.name=probe", f"data.path={imdb_slice_archive}",
                             "data.max_length=16", "data.windows=3", "model.window_pooling=max",
                             "data.train_size=16", "data.val_size=0", "data.eval_size=12", "train.batch_size=4",
                             "train.lr=0.05", "train.baseline=false", "train.feature_cache=true",
                             f"train.feature_cache_dir={tmp_path / 'cache'}"])
    metrics = train(cfg, tmp_path / "run")
    assert metrics["feature_cache"]
    rows = sum(json.loads(m.read_text())["reviews"] for m in (tmp_path / "cache").glob("*/meta.json"))
    assert rows > 16 + 12  # the train and test caches hold windows: more rows than reviews
    texts, expected = saved_probabilities(tmp_path / "run")
    got = [p.prob_positive for p in Predictor(tmp_path / "run").predict(texts)]
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) < 0.02


def test_one_window_run_saves_what_it_always_did(minilm_lora_run: tuple[Path, str]) -> None:
    """data.windows=1: no window keys in sentitune.json, no scorer file (the folder of an earlier version)."""
    model = minilm_lora_run[0] / "model"
    meta = json.loads((model / "sentitune.json").read_text())
    assert "window_pooling" not in meta and "windows" not in meta["preprocessing"]
    assert not (model / WINDOW_SCORER).exists()
    assert load_model(model)[0].window_scorer is None
