"""Zero-shot: label-word tokenization, truncation inside the template, batching, calibration, the run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sentitune.cli import main
from sentitune.config import ConfigError, PromptTemplate, load_config
from sentitune.data.sources import load_splits
from sentitune.errors import ModelError
from sentitune.inference import evaluate_run, predict_texts
from sentitune.models.registry import load_tokenizer, resolve
from sentitune.zero_shot import (
    BUILTIN_TEMPLATES,
    CausalScorer,
    Demonstration,
    PromptEncoder,
    combine_margins,
    contextual_offset,
    draw_demonstrations,
    fit_threshold,
    get_template,
    get_templates,
    label_free_threshold,
    load_causal_lm,
    member_scales,
    run_zero_shot,
    scoring,
)

TEXTS = ["A wonderful film with great acting.", "Terrible. Two hours I will never get back, honestly.", "Meh.",
         "I loved every minute of it and would happily watch it again with friends.", "Bad."]


@pytest.fixture(scope="module")
def tiny() -> tuple[object, object]:
    return load_causal_lm("gpt2-tiny-random")


def test_label_words_leading_space_and_multi_token(tiny: tuple) -> None:
    _, tok = tiny
    spaced = PromptEncoder(tok, BUILTIN_TEMPLATES["published"], 50).describe_label_words()
    bare = PromptEncoder(tok, PromptTemplate("bare", "Review: {text} Sentiment:", "Positive", "Negative"),
                         50).describe_label_words()
    for info in (*spaced.values(), *bare.values()):
        assert "".join(info["tokens"]) == info["word"]  # the reported tokens spell the word exactly
    assert spaced["positive"]["tokens"] == [" Positive"]  # GPT-2 BPE: one token with its leading space
    assert spaced["positive"]["ids"] != bare["positive"]["ids"]
    assert len(bare["positive"]["ids"]) > 1  # "Positive" without a space is split ("Pos" + "itive")


def test_multi_token_word_is_the_sum_of_its_token_logprobs(tiny: tuple) -> None:
    model, tok = tiny
    template = PromptTemplate("multi", "Review: {text}\nVerdict:", " not good at all", "Positive!")
    enc = PromptEncoder(tok, template, 50)
    lp = CausalScorer(model, tok.pad_token_id, batch_size=2).word_logprobs([enc.encode(t) for t in TEXTS],
                                                                          enc.label_ids)
    for i, text in enumerate(TEXTS):  # reference: one unpadded forward over prompt + word, read token by token
        for j, word in enumerate(enc.label_ids):
            ids = enc.encode(text) + word
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
            start = len(ids) - len(word)
            expected = sum(float(logp[start - 1 + k, w]) for k, w in enumerate(word))
            assert lp[i, j] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("side", ["tail", "head"])
def test_truncation_cuts_the_review_never_the_prompt(tiny: tuple, side: str) -> None:
    _, tok = tiny
    enc = PromptEncoder(tok, BUILTIN_TEMPLATES["question"], review_tokens=12, truncation=side)
    words = [f"word{i}" for i in range(60)]
    ids = enc.encode(" ".join(words))
    assert ids[:len(enc.prefix_ids)] == enc.prefix_ids
    assert ids[len(ids) - len(enc.suffix_ids):] == enc.suffix_ids
    review = tok.decode(ids[len(enc.prefix_ids):len(ids) - len(enc.suffix_ids)])
    assert len(ids) == len(enc.prefix_ids) + 12 + len(enc.suffix_ids)
    assert tok.decode(enc.suffix_ids).endswith("Answer:")
    assert ("word59" in review) == (side == "tail") and ("word0 " in review) == (side == "head")
    short = enc.encode("Fine.")  # a short review is kept whole, with the prompt's space before it
    assert tok.decode(short) == "Movie review: Fine.\nQuestion: Is this review positive or negative?\nAnswer:"


def test_batched_scores_equal_one_by_one(tiny: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    model, tok = tiny
    demos = [Demonstration("Great fun for the whole family.", 1), Demonstration("Boring and wooden throughout.", 0)]
    for enc in (PromptEncoder(tok, BUILTIN_TEMPLATES["published"], 8),  # 8 tokens: some reviews cut, some not
                PromptEncoder(tok, BUILTIN_TEMPLATES["movie-was"], 50, demonstrations=demos)):
        batched = CausalScorer(model, tok.pad_token_id, batch_size=4).margins(enc, TEXTS)
        monkeypatch.setattr(scoring, "MIN_SHARED_PREFIX", 10**9)  # no shared-prefix KV cache, no padding
        alone = np.array([CausalScorer(model, tok.pad_token_id, 1).margins(enc, [t])[0] for t in TEXTS])
        monkeypatch.undo()
        np.testing.assert_allclose(batched, alone, atol=1e-4)
        assert np.ptp(batched) > 1e-3  # the reviews really score differently


def test_fit_threshold_maximises_accuracy_and_label_free_is_the_median() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = rng.normal(2.0 * labels - 3.0, 1.0)  # biased: most margins are negative
    t = fit_threshold(labels, scores)
    accuracy = ((scores > t) == labels).mean()
    best = max(((scores > c) == labels).mean() for c in np.concatenate([scores, [scores.min() - 1]]))
    assert accuracy == best and accuracy > ((scores > 0) == labels).mean()
    assert (scores > label_free_threshold(scores)).mean() == pytest.approx(0.5, abs=1 / 300)


def test_contextual_calibration_makes_content_free_input_neutral(tiny: tuple) -> None:
    model, tok = tiny
    scorer = CausalScorer(model, tok.pad_token_id)
    enc = PromptEncoder(tok, BUILTIN_TEMPLATES["movie-was"], 50)
    offset = contextual_offset(scorer, enc, ["N/A"])
    assert offset == pytest.approx(scorer.margins(enc, ["N/A"])[0], abs=1e-6) and abs(offset) > 1e-3
    # Two inputs: the offset is the log-ratio of the averaged normalised probabilities, not the mean margin.
    m = scorer.margins(enc, ["N/A", ""])
    p = 1 / (1 + np.exp(-m))
    assert contextual_offset(scorer, enc, ["N/A", ""]) == pytest.approx(math.log(p.mean() / (1 - p).mean()), abs=1e-6)


def test_demonstrations_are_balanced_and_seeded(imdb_slice: dict) -> None:
    demos = draw_demonstrations(imdb_slice["train"], 4, seed=1)
    assert sorted(d.label for d in demos) == [0, 0, 1, 1]
    again, other = draw_demonstrations(imdb_slice["train"], 4, seed=1), draw_demonstrations(imdb_slice["train"], 4, 2)
    assert demos == again != other


def test_chat_template_wraps_the_prompt_for_instruct_models() -> None:
    tok = load_tokenizer(resolve("smollm2-135m").source)
    enc = PromptEncoder(tok, BUILTIN_TEMPLATES["chat"], 20)
    text = tok.decode(enc.encode("Loved it."))
    assert "<|im_start|>user\n" in text and text.endswith("Answer with one word.<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(ConfigError):
        PromptEncoder(tok, PromptTemplate("bad", "no slot here"), 20)
    sweep = Path(__file__).parents[1] / "configs" / "experiments" / "zero-shot-sweep.yaml"
    custom = load_config(sweep).zero_shot.templates
    user = PromptEncoder(tok, get_template("chat-short", custom), 20)
    assert tok.decode(user.encode("Loved it.")).endswith("negative?\n\nLoved it.<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(ConfigError, match="unknown template"):
        get_template("nope", custom)


def test_smollm2_ranks_clear_reviews() -> None:
    model, tok = load_causal_lm("smollm2-135m")
    enc = PromptEncoder(tok, BUILTIN_TEMPLATES["review-sentiment"], 200)
    m = CausalScorer(model, tok.pad_token_id).margins(enc, ["An absolute masterpiece, I loved every minute.",
                                                            "Awful and boring, the worst film I have ever seen."])
    assert m[0] > m[1]


def test_run_and_cli_write_a_complete_run(tiny: tuple, imdb_slice_archive: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    cfg = load_config(None, ["method.name=zero-shot", "model.spec=gpt2-tiny-random", f"data.path={imdb_slice_archive}",
                             "data.val_size=20", "zero_shot.review_tokens=24", "zero_shot.shots=2",
                             "zero_shot.calibration_size=10", "zero_shot.sweep=published,movie-was",
                             "zero_shot.shot_tokens=10"])
    result = run_zero_shot(cfg, tmp_path / "run")
    assert result["sweep"]["selected"] in ("published", "movie-was")
    assert set(result["rows"]) == {"raw", "contextual", "validation", "label-free", "2-shot raw",
                                   "2-shot contextual", "2-shot validation", "2-shot label-free"}
    assert len({result["rows"][k]["roc_auc"] for k in ("raw", "contextual", "validation", "label-free")}) == 1
    assert result["rows"]["raw"]["threshold"] == 0.0
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test"]["n"] == 60 and saved["decision"] == "2-shot label-free"
    lines = (tmp_path / "run" / "predictions.csv").read_text().splitlines()
    assert lines[0] == "id,label,prob_positive,pred,words" and len(lines) == 61
    assert (tmp_path / "run" / "margins-0-shot.csv").exists()
    # The saved run predicts and re-evaluates like any run: same prompt (with its demonstrations), same threshold.
    again = evaluate_run(tmp_path / "run", "test")
    assert again["model"]["accuracy"] == result["test"]["accuracy"]
    assert again["model"]["roc_auc"] == pytest.approx(result["test"]["roc_auc"], abs=1e-9)
    with (tmp_path / "run" / "predictions.csv").open() as f:
        saved_probs = {r["id"]: float(r["prob_positive"]) for r in csv.DictReader(f)}
    test = load_splits(cfg.data, cfg.train.seed).test[:5]
    for e, pred in zip(test, predict_texts(tmp_path / "run", [e.text for e in test]), strict=True):
        assert pred.prob_positive == pytest.approx(saved_probs[e.id], abs=1e-5)
        assert pred.label == ("positive" if saved_probs[e.id] > 0.5 else "negative")
    code = main(["zero-shot", "--model", "gpt2-tiny-random", "--data", str(imdb_slice_archive), "--eval-size", "10",
                 "--set", "zero_shot.calibration_size=6", "--set", "data.val_size=10", "--review-tokens", "16",
                 "--out", str(tmp_path / "cli"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "label word positive: ' positive' -> tokens [' positive']" in out and "label-free" in out
    assert main(["train", "--model", "gpt2-tiny-random", "--method", "zero-shot", "--data", str(imdb_slice_archive),
                 "--eval-size", "10", "--val-size", "10", "--set", "zero_shot.calibration_size=6",
                 "--out", str(tmp_path / "train"), "--no-progress"]) == 0
    # The recipe for trained methods says where zero-shot runs instead of failing somewhere inside.
    from sentitune.training import train

    with pytest.raises(ConfigError, match="method.name=zero-shot trains no transformer"):
        train(cfg, tmp_path / "not-trained")
    assert not (tmp_path / "not-trained").exists()
    # What the run is comes from its config.yaml: without zero_shot.json, predict names the missing file.
    (tmp_path / "run" / "zero_shot.json").unlink()
    with pytest.raises(ModelError, match="zero_shot.json: not a readable zero-shot predictor"):
        predict_texts(tmp_path / "run", ["A fine film."])


def test_ensemble_margin_is_the_mean_of_spread_normalised_members() -> None:
    a, b = np.array([1.0, -2.0, 3.0, 0.5]), np.array([10.0, 30.0, -20.0, 0.0])
    assert member_scales([a]) == [1.0] and np.array_equal(combine_margins([a], [1.0]), a)  # one member: unchanged
    scales = member_scales([a, b])
    assert scales == pytest.approx([a.std(), b.std()])
    assert combine_margins([a, b], scales) == pytest.approx((a / a.std() + b / b.std()) / 2)
    # A member whose margins are 100x larger does not outvote the other: scaling it changes nothing.
    assert combine_margins([a, 100 * b], member_scales([a, 100 * b])) == pytest.approx(combine_margins([a, b], scales))
    with pytest.raises(ConfigError, match="empty member"):
        get_templates("published+")
    assert [t.name for t in get_templates("published+movie-was")] == ["published", "movie-was"]


def test_ensemble_run_saves_a_predictor_that_reproduces_its_predictions(tiny: tuple, imdb_slice_archive: Path,
                                                                          tmp_path: Path) -> None:
    cfg = load_config(None, ["method.name=zero-shot", "model.spec=gpt2-tiny-random", f"data.path={imdb_slice_archive}",
                             "data.val_size=20", "data.eval_size=12", "zero_shot.review_tokens=24",
                             "zero_shot.calibration_size=10", "zero_shot.template=published+movie-was"])
    result = run_zero_shot(cfg, tmp_path / "run")
    assert result["template"]["name"] == "published+movie-was" and len(result["template"]["members"]) == 2
    assert {"published positive", "movie-was negative"} <= set(result["label_words"])
    saved = json.loads((tmp_path / "run" / "zero_shot.json").read_text())
    assert len(saved["scales"]) == 2 and all(s > 0 for s in saved["scales"])
    with (tmp_path / "run" / "predictions.csv").open() as f:
        saved_probs = {r["id"]: float(r["prob_positive"]) for r in csv.DictReader(f)}
    test = load_splits(cfg.data, cfg.train.seed).test
    preds = predict_texts(tmp_path / "run", [e.text for e in test])
    assert [p.prob_positive for p in preds] == pytest.approx([saved_probs[e.id] for e in test], abs=1e-5)
