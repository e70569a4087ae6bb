"""method.name=contrastive: the batch-wise supervised contrastive loss, the two phases it expands to, and a real
MiniLM run on IMDb reviews whose tuned encoder puts reviews of one class closer together, resumes after a kill
bit for bit, and loads back like any run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import interrupt_after_steps, run_cli

from sentitune.config import load_config
from sentitune.data.batching import encode, encoding_args, iterate, sorted_batches
from sentitune.data.sources import load_splits
from sentitune.errors import ConfigError
from sentitune.inference import evaluate_run
from sentitune.models.contrastive import supervised_contrastive_loss
from sentitune.models.saving import load_model


def written_out(z: torch.Tensor, labels: list[int], temperature: float) -> float:
    """The loss of Khosla et al. (2020, eq. 2) with explicit loops over anchors and positives."""
    z = torch.nn.functional.normalize(z.double(), dim=1)
    terms = []
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(torch.exp(z[i] @ z[a] / temperature) for a in others)
        terms.append(-sum(torch.log(torch.exp(z[i] @ z[p] / temperature) / denominator) for p in positives)
                     / len(positives))
    return float(sum(terms) / len(terms))


def test_the_loss_is_the_formula_written_out() -> None:
    z = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    labels = [0, 1, 1, 0, 2, 1, 0]  # class 2 has one review: no positive, left out as an anchor
    got = supervised_contrastive_loss(z, torch.tensor(labels), 0.3)
    assert got.item() == pytest.approx(written_out(z, labels, 0.3), rel=1e-5)


def test_the_loss_is_low_when_classes_cluster_and_high_when_they_mix() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    base = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    noise = 0.05 * torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    clustered = base[labels] + noise
    mixed = base[torch.tensor([0, 1, 0, 1, 0, 1])] + noise
    # its floor is log(2): each anchor's probability is shared by its 2 positives
    assert supervised_contrastive_loss(clustered, labels, 0.1).item() == pytest.approx(np.log(2), abs=0.01)
    assert supervised_contrastive_loss(mixed, labels, 0.1).item() > 3


def test_a_batch_with_no_pair_of_one_class_gives_zero_and_still_backpropagates() -> None:
    z = torch.randn(3, 4, requires_grad=True)
    loss = supervised_contrastive_loss(z, torch.tensor([0, 1, 2]), 0.1)
    loss.backward()
    assert loss.item() == 0 and z.grad is not None


def test_contrastive_is_a_contrastive_phase_then_a_head() -> None:
    cfg = load_config(None, ["method.name=contrastive", "train.epochs=3", "train.lr=0.001",
                             "method.contrastive.head_epochs=5", "method.contrastive.head_lr=0.02",
                             "method.contrastive.temperature=0.2"])
    encoder, head = cfg.phases()
    assert (encoder.method, encoder.loss, encoder.epochs, encoder.lr, encoder.temperature) == (
        "partial", "contrastive", 3, 0.001, 0.2)
    assert (head.method, head.loss, head.epochs, head.lr) == ("probe", "cross-entropy", 5, 0.02)


@pytest.mark.parametrize(("overrides", "expect"), [
    (["method.phases=[{method: partial, loss: contrastive}]"], "the head never trains"),
    (["method.phases=[{method: probe, loss: contrastive}, {method: probe}]"], "probe trains the head"),
    (["method.phases=[{method: partial, loss: hinge}, {method: probe}]"], "method.phases[0].loss"),
    (["method.name=contrastive", "method.contrastive.temperature=0"], "method.contrastive.temperature"),
    (["method.name=contrastive", "train.batch_size=2"], "train.batch_size: a contrastive phase"),
])
def test_a_contrastive_schedule_that_cannot_work_is_refused(overrides: list[str], expect: str) -> None:
    with pytest.raises(ConfigError, match=expect.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, ["method.name=two-phase", *overrides])


def argv(archive: Path, out: Path, *extra: str) -> list[str]:
    """The packaged MiniLM, its lower 4 blocks cached, on 24 labelled IMDb reviews (6 steps an epoch)."""
    return ["train", "--model", "minilm", "--method", "contrastive", "--data", str(archive), "--train-size", "24",
            "--val-size", "8", "--eval-size", "16", "--max-length", "64", "--batch-size", "4", "--epochs", "2",
            "--lr", "0.0005", "--seed", "5", "--feature-cache", "--out", str(out), "--no-progress",
            "--set", "method.freeze_layers=4", "--set", "method.contrastive.head_epochs=2",
            "--set", "train.baseline=false", "--set", "train.refuse_one_class=false", *extra]


def class_gap(model: torch.nn.Module, cfg: object, tokenizer: object) -> float:
    """Mean cosine similarity of training reviews of one class minus that of reviews of different classes."""
    train = load_splits(cfg.data, cfg.train.seed).train
    data = encode(train, tokenizer, **encoding_args(cfg.data, False))
    rows, labels = [], []
    with torch.no_grad():
        for batch in iterate(data, sorted_batches(data.lengths(), 8), tokenizer.pad_token_id):
            rows.append(model(batch["input_ids"], batch["attention_mask"], embed=True))
            labels.append(batch["labels"])
    z = torch.nn.functional.normalize(torch.cat(rows), dim=1)
    y = torch.cat(labels)
    similarity, same = z @ z.T, y.view(-1, 1) == y.view(1, -1)
    off = ~torch.eye(len(y), dtype=torch.bool)
    return float(similarity[same & off].mean() - similarity[~same].mean())


def test_a_contrastive_run_tunes_the_encoder_resumes_and_loads_back(
        imdb_slice_archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sentitune.models.methods import build_classifier
    from sentitune.models.registry import load_tokenizer, resolve

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    code, stdout, err = run_cli(argv(imdb_slice_archive, whole, "--set", "train.checkpoint_every=1"))
    assert code == 0, err
    log = [json.loads(line) for line in (whole / "log.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in log if r.get("event") == "train"} == {1, 2}
    assert {r["phase"] for r in log if r.get("event") == "validation"} == {2}  # no head to validate in phase 1

    model, tokenizer = load_model(whole / "model")
    cfg = load_config(whole / "config.yaml")
    torch.manual_seed(cfg.train.seed)
    untuned = build_classifier(cfg, resolve(cfg.model.spec), load_tokenizer(resolve(cfg.model.spec).source)
                               .pad_token_id).eval()
    assert class_gap(model.eval(), cfg, tokenizer) > class_gap(untuned, cfg, tokenizer) + 0.05

    metrics = json.loads((whole / "metrics.json").read_text())
    again = evaluate_run(whole, baseline=False)
    assert again["model"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])

    step = interrupt_after_steps(monkeypatch, 5)  # inside the contrastive phase (12 steps)
    code, _, err = run_cli(argv(imdb_slice_archive, killed, "--set", "train.checkpoint_every=1"))
    assert code == 130 and (killed / "checkpoint.pt").is_file(), err
    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    code, _, err = run_cli(argv(imdb_slice_archive, killed, "--set", "train.checkpoint_every=1", "--resume"))
    assert code == 0, err
    assert (killed / "predictions.csv").read_bytes() == (whole / "predictions.csv").read_bytes()
