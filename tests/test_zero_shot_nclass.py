"""Zero-shot with one label word per class (negative / neutral / positive) and target-dependent prompts, on
slices of the real SemEval-2014 restaurant files: scores, decisions, the {target} slot, errors, saved runs."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from sentitune.config import ConfigError, PromptTemplate, load_config
from sentitune.data.sources import load_splits
from sentitune.errors import DataError
from sentitune.inference import evaluate_run
from sentitune.models.registry import load_tokenizer, resolve
from sentitune.zero_shot import (
    BUILTIN_TEMPLATES,
    CausalScorer,
    PromptEncoder,
    SavedPrompt,
    check_templates,
    contextual_bias,
    decision_metrics,
    draw_demonstrations,
    fit_bias,
    fit_threshold,
    load_causal_lm,
    probabilities,
    run_zero_shot,
)

ROOT = Path(__file__).resolve().parents[1]
TARGETS = Path(os.environ.get("SENTITUNE_TEST_TARGETS", ROOT.parent / "shared" / "data" / "target-sentiment"))
CLASSES = ["negative", "neutral", "positive"]
LONG = " ".join(f"word{i}" for i in range(80))


@pytest.fixture(scope="module")
def semeval(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The first 120 training and 30 test instances of SemEval-2014 restaurants (all three classes in each)."""
    folder = TARGETS / "semeval14"
    if not folder.is_dir():
        pytest.fail(f"{folder}: the target-sentiment data the tests read is missing (set SENTITUNE_TEST_TARGETS)")
    out = tmp_path_factory.mktemp("semeval")
    paths = {}
    for split, name, n in (("train", "Restaurants_Train.xml.seg", 120), ("test", "Restaurants_Test_Gold.xml.seg", 30)):
        lines = (folder / name).read_text(encoding="utf-8").splitlines()[:3 * n]
        paths[split] = out / name
        paths[split].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def target_config(semeval: dict[str, Path], *overrides: str) -> object:
    return load_config(None, ["method.name=zero-shot", "model.spec=gpt2-tiny-random", f"data.source={semeval['train']}",
                              f"data.test_path={semeval['test']}", f"data.labels={CLASSES}", "data.val_size=30",
                              "zero_shot.calibration_size=20", "zero_shot.template=target-sentiment",
                              "zero_shot.decision=contextual", *overrides])


@pytest.fixture(scope="module")
def examples(semeval: dict[str, Path]) -> list:
    return load_splits(target_config(semeval).data, 42).test


@pytest.fixture(scope="module")
def tiny() -> tuple[object, object]:
    return load_causal_lm("gpt2-tiny-random")


def direct_logprob(model: object, prompt: list[int], word: list[int]) -> float:
    """One unpadded forward over prompt + word, read token by token: the reference for the scorer."""
    ids = prompt + word
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)  # type: ignore[operator]
    return sum(float(logp[len(prompt) - 1 + k, w]) for k, w in enumerate(word))


@pytest.mark.parametrize("spec", ["gpt2-tiny-random", "smollm2-135m"])
def test_k_word_scores_are_the_models_log_likelihoods(spec: str, examples: list) -> None:
    model, tok = load_causal_lm(spec)
    # A multi-token word among single-token ones: each goes its own way through word_logprobs.
    template = PromptTemplate("t", BUILTIN_TEMPLATES["target-sentiment"].prompt,
                              words=[" negative", " neither good nor bad", " positive"])
    enc = PromptEncoder(tok, template, 40, classes=CLASSES)
    assert len(enc.label_ids[1]) > 1 and len(enc.label_ids[0]) == 1
    part = examples[:4]
    scorer = CausalScorer(model, tok.pad_token_id, batch_size=3)
    lp = scorer.logprobs(enc, [e.text for e in part], targets=[e.target for e in part])
    for i, e in enumerate(part):
        for j, word in enumerate(enc.label_ids):
            assert lp[i, j] == pytest.approx(direct_logprob(model, enc.encode(e.text, e.target), word), abs=1e-4)
    scores = scorer.scores(enc, [e.text for e in part], targets=[e.target for e in part])
    np.testing.assert_allclose(scores, lp - logsumexp(lp, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(np.array(probabilities(scores, [0.0] * 3)).sum(axis=1), 1.0, atol=1e-9)
    assert np.ptp(scores[:, 2] - scores[:, 0]) > 1e-4  # the sentences really score differently


def test_label_words_are_named_by_class_in_data_labels_order(tiny: tuple) -> None:
    _, tok = tiny
    enc = PromptEncoder(tok, BUILTIN_TEMPLATES["target-sentiment"], 40, classes=CLASSES)
    words = enc.describe_label_words()
    assert list(words) == CLASSES and [w["word"] for w in words.values()] == [" negative", " neutral", " positive"]
    assert [w["ids"] for w in words.values()] == enc.label_ids


@pytest.mark.parametrize("side", ["tail", "head"])
def test_target_slot_is_filled_and_never_truncated(tiny: tuple, side: str) -> None:
    _, tok = tiny
    enc = PromptEncoder(tok, BUILTIN_TEMPLATES["target-sentiment"], review_tokens=6, truncation=side, classes=CLASSES)
    target = "the grilled octopus with lemon"
    for text in (f"{target} {LONG}", f"{LONG} {target}"):  # the target at either end of a sentence that is cut
        prefix, suffix = enc.frame(target)
        ids = enc.encode(text, target)
        assert ids[:len(prefix)] == prefix and ids[len(ids) - len(suffix):] == suffix
        assert len(ids) == len(prefix) + 6 + len(suffix)  # only the sentence was cut, to review_tokens
        assert tok.decode(suffix) == f'\nThe sentiment toward "{target}" is'
    assert tok.decode(enc.encode("Great food.", "food")) == 'Sentence: Great food.\nThe sentiment toward "food" is'
    # In a chat template the target is filled inside the user message, the answer comes after the assistant header.
    smol = load_tokenizer(resolve("smollm2-135m").source)
    chat = PromptEncoder(smol, BUILTIN_TEMPLATES["target-chat"], 6, classes=CLASSES)
    text = smol.decode(chat.encode(LONG, "the wine list"))
    assert 'sentiment toward "the wine list" in this sentence' in text and "word79" in text and "word0 " not in text
    assert text.endswith("<|im_start|>assistant\n")


def test_templates_and_examples_must_agree(tiny: tuple, semeval: dict[str, Path]) -> None:
    _, tok = tiny
    target, binary = BUILTIN_TEMPLATES["target-sentiment"], BUILTIN_TEMPLATES["review-sentiment"]
    check_templates([target], CLASSES, targets=True)
    check_templates([binary], ["negative", "positive"], targets=False)
    with pytest.raises(ConfigError, match="has a \\{target\\} slot, but the examples have no targets"):
        check_templates([target], CLASSES, targets=False)
    with pytest.raises(ConfigError, match="has no \\{target\\} slot, but the examples are target-dependent"):
        check_templates([PromptTemplate("t", "{text} is", words=[" bad", " so-so", " good"])], CLASSES, targets=True)
    with pytest.raises(ConfigError, match="2 label words .* for 3 classes"):
        check_templates([binary], CLASSES, targets=False)
    with pytest.raises(ConfigError, match="in another order than data.labels"):
        PromptEncoder(tok, target, 20, classes=["positive", "neutral", "negative"])
    enc = PromptEncoder(tok, target, 20, classes=CLASSES)
    with pytest.raises(DataError, match="needs a target"):
        enc.encode("Great food.")
    with pytest.raises(DataError, match="has no \\{target\\} slot for the target 'food'"):
        PromptEncoder(tok, binary, 20).encode("Great food.", "food")
    # The recipe checks before it loads a model; label-free (a median) has no three-class form.
    plain = '[{name: plain, prompt: "{text} Sentiment:", words: [" bad", " so-so", " good"]}]'
    with pytest.raises(ConfigError, match="template 'plain' has no \\{target\\} slot"):
        run_zero_shot(target_config(semeval, f"zero_shot.templates={plain}", "zero_shot.template=plain"))
    with pytest.raises(ConfigError, match="label-free .* is for two classes"):
        target_config(semeval, "zero_shot.decision=label-free")


def test_raw_and_contextual_decisions_for_three_classes(tiny: tuple, examples: list) -> None:
    model, tok = tiny
    enc = PromptEncoder(tok, BUILTIN_TEMPLATES["target-sentiment"], 40, classes=CLASSES)
    scorer = CausalScorer(model, tok.pad_token_id)
    content_free = ["N/A", ""]
    bias = contextual_bias(scorer, enc, content_free)
    # log p_cf: the content-free inputs (in the text and the target slot) normalised over the words, averaged.
    lp = np.array([[direct_logprob(model, enc.encode(cf, cf), w) for w in enc.label_ids] for cf in content_free])
    p = np.exp(lp - logsumexp(lp, axis=1, keepdims=True))
    np.testing.assert_allclose(bias, np.log(p.mean(axis=0)), atol=1e-5)
    assert np.ptp(bias) > 1e-3
    one = scorer.scores(enc, ["N/A"], targets=["N/A"])  # one content-free input: calibrated to uniform
    np.testing.assert_allclose(probabilities(one, contextual_bias(scorer, enc, ["N/A"])), [[1 / 3] * 3], atol=1e-5)
    scores = scorer.scores(enc, [e.text for e in examples], targets=[e.target for e in examples])
    labels = [e.label for e in examples]
    for decision in ([0.0, 0.0, 0.0], bias):
        row = decision_metrics(labels, scores, decision, CLASSES)
        predicted = (scores - np.array(decision)).argmax(axis=1)
        assert row["accuracy"] == pytest.approx(float((predicted == np.array(labels)).mean()))
        assert np.array(row["confusion_matrix"]).sum(axis=0).tolist() == np.bincount(predicted, minlength=3).tolist()
        assert row["labels"] == CLASSES and row["bias"] == list(decision)


def test_fit_bias_is_fit_threshold_for_two_classes_and_removes_a_class_bias() -> None:
    rng = np.random.default_rng(0)
    y2 = rng.integers(0, 2, 200)
    s2 = np.stack([rng.normal(0, 1, 200), rng.normal(1.5 * y2 - 2, 1)], axis=1)
    assert fit_bias(y2, s2)[1] == fit_threshold(y2, s2[:, 1] - s2[:, 0])
    y = rng.integers(0, 3, 600)
    clean = rng.normal(0, 1, (600, 3)) + 2.5 * np.eye(3)[y]
    shift = np.array([0.0, 3.0, -1.5])  # the model's preference for one word, whatever the input
    scores = clean + shift
    bias = np.array(fit_bias(y, scores))
    def accuracy(b: np.ndarray) -> float:
        return float(((scores - b).argmax(axis=1) == y).mean())
    assert bias[0] == 0.0
    assert accuracy(bias) >= accuracy(shift) > accuracy(np.zeros(3)) + 0.1  # at least as good as knowing the shift


def test_demonstrations_are_balanced_over_three_classes_and_keep_their_targets(examples: list, tiny: tuple) -> None:
    demos = draw_demonstrations(examples, 5, seed=3, classes=3)
    assert sorted(np.bincount([d.label for d in demos], minlength=3).tolist()) == [1, 2, 2]
    assert all(d.target for d in demos) and demos == draw_demonstrations(examples, 5, 3, 3)
    _, tok = tiny
    enc = PromptEncoder(tok, BUILTIN_TEMPLATES["target-sentiment"], 40, demonstrations=demos[:1], classes=CLASSES)
    shown = tok.decode(enc.encode("Great food.", "food"))
    assert shown.startswith("Sentence: ") and f'toward "{demos[0].target}" is{enc.words[demos[0].label]}\n\n' in shown


def test_three_class_run_saves_a_predictor_that_reproduces_its_predictions(semeval: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    cfg = target_config(semeval, "zero_shot.shots=3", "zero_shot.shot_tokens=12")
    result = run_zero_shot(cfg, tmp_path / "run")
    assert set(result["rows"]) == {"raw", "contextual", "validation", "3-shot raw", "3-shot contextual",
                                   "3-shot validation"}
    assert result["decision"] == "3-shot contextual" and result["test"]["labels"] == CLASSES
    assert np.array(result["test"]["confusion_matrix"]).sum() == len(load_splits(cfg.data, 42).test)
    saved = json.loads((tmp_path / "run" / "zero_shot.json").read_text())
    assert saved["labels"] == CLASSES and len(saved["bias"]) == 3 and "threshold" not in saved
    assert saved["bias"] == result["thresholds"]["3-shot"]["contextual"]
    assert all(d["target"] for d in saved["demonstrations"])

    def read(name: str) -> dict[str, list[float]]:
        with (tmp_path / "run" / name).open() as f:
            rows = list(csv.DictReader(f))
        assert all(r["target"] for r in rows)
        return {r["id"]: [float(r[f"prob_{c}"]) for c in CLASSES] for r in rows}

    written = read("predictions.csv")
    assert all(sum(p) == pytest.approx(1.0, abs=1e-5) for p in written.values())
    with (tmp_path / "run" / "margins-0-shot.csv").open() as f:
        assert next(csv.reader(f)) == ["id", "label", *(f"logp_{c}" for c in CLASSES)]
    # evaluate re-scores test with the saved prompt, demonstrations and biases: the same probabilities.
    again = evaluate_run(tmp_path / "run", "test")
    assert again["model"]["accuracy"] == result["test"]["accuracy"] and again["model"]["bias"] == saved["bias"]
    evaluated = read("predictions-test.csv")
    assert evaluated.keys() == written.keys()
    for key, probs in written.items():
        assert evaluated[key] == pytest.approx(probs, abs=1e-5)
    test = load_splits(cfg.data, 42).test[:5]
    probs = SavedPrompt(tmp_path / "run").probabilities([e.text for e in test], [e.target for e in test])
    assert np.array(probs) == pytest.approx(np.array([written[e.id] for e in test]), abs=1e-5)
