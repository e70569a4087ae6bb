"""Frozen-prefix features: prefix + top reproduces the full forward; the on-disk cache is keyed and reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import take

from sentitune.data.batching import collate, encode
from sentitune.features import build_cache, fits
from sentitune.models.registry import load_backbone, load_tokenizer, resolve
from sentitune.models.split import prefix_forward, top_forward
from sentitune.runtime import to_device

pytestmark = pytest.mark.numeric  # run again under the other precision by `make test`


@pytest.fixture(scope="module", params=["gpt2-tiny-random", "minilm"])
def model(request: pytest.FixtureRequest) -> tuple[str, object, torch.nn.Module]:
    source = resolve(request.param).source
    return source, load_tokenizer(source), load_backbone(source).eval()


@pytest.fixture(scope="module")
def encoded(model: tuple, imdb_slice: dict) -> object:
    _, tokenizer, _ = model
    return encode(take(imdb_slice["train"], 6), tokenizer, max_length=48)


@pytest.mark.parametrize("n", [0, 1, "last", "all"])
def test_prefix_then_top_equals_full_forward(model: tuple, encoded: object, n: int | str) -> None:
    _, tokenizer, backbone = model
    layers = backbone.config.num_hidden_layers
    n = {"last": layers - 1, "all": layers}.get(n, n)
    batch = collate(encoded, list(range(len(encoded))), tokenizer.pad_token_id)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert (mask == 0).any(), "the batch must contain padding for this test to mean anything"
    with torch.no_grad():
        full = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        hidden = prefix_forward(backbone, ids, mask, n)
        out = top_forward(backbone, ids, mask, hidden, n)
    real = mask.bool()
    torch.testing.assert_close(out[real], full[real], rtol=0, atol=1e-5)
    assert len(backbone.config.to_dict()) and hidden.shape == full.shape


def test_cache_is_built_once_reused_and_keyed(model: tuple, encoded: object, tmp_path: Path) -> None:
    _, tokenizer, backbone = model
    pad = tokenizer.pad_token_id
    cache = build_cache(backbone, encoded, 1, pad, batch_size=4, root=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1 and not list(tmp_path.glob(".*")), "one folder, no temp left"
    mtime = (cache.folder / "hidden.bin").stat().st_mtime_ns
    again = build_cache(backbone, encoded, 1, pad, batch_size=4, root=tmp_path)
    assert again.folder == cache.folder and (again.folder / "hidden.bin").stat().st_mtime_ns == mtime
    # what building it took is recorded once, and a process that finds it built knows it did not pay for it
    assert cache.fresh and not again.fresh and again.seconds == cache.seconds > 0
    other_n = build_cache(backbone, encoded, 2 if backbone.config.num_hidden_layers > 2 else 0, pad,
                          batch_size=4, root=tmp_path)
    assert other_n.folder != cache.folder
    shorter = encode([], tokenizer, 48)
    assert build_cache(backbone, shorter, 1, pad, root=tmp_path).folder != cache.folder
    with torch.no_grad():  # changed prefix weights: a new key, never stale states
        backbone.get_input_embeddings().weight[0, 0] += 1.0
    try:
        assert build_cache(backbone, encoded, 1, pad, batch_size=4, root=tmp_path).folder != cache.folder
    finally:
        with torch.no_grad():
            backbone.get_input_embeddings().weight[0, 0] -= 1.0

    # The stored states are the prefix output rounded to bf16, each review unpadded, in data order.
    indices = [3, 0, 5]
    batch = collate(encoded, indices, pad)
    with torch.no_grad():
        expected = prefix_forward(backbone, batch["input_ids"], batch["attention_mask"], 1)
    got = cache.batch(indices, batch["input_ids"].shape[1])
    real = batch["attention_mask"].bool()
    # Within one bf16 rounding step (batch composition differs from the build, so fp32 noise can flip one).
    torch.testing.assert_close(got[real], expected[real], rtol=2**-7, atol=1e-3)
    assert (got[~real] == 0).all()

    # Held in device memory (the GPU path; here the CPU stands in for the device): the same batches.
    cache.hold_on(torch.device("cpu"))
    torch.testing.assert_close(cache.batch(indices, batch["input_ids"].shape[1]), got, rtol=0, atol=0)


def test_a_cache_goes_to_gpu_memory_only_when_it_fits() -> None:
    assert fits(4 << 30, free=10 << 30) and not fits(6 << 30, free=10 << 30)  # half the free memory at most
    assert fits(0, free=0)


def test_batches_reach_the_device_unchanged() -> None:
    t = torch.arange(6).reshape(2, 3)
    assert to_device(t, torch.device("cpu")) is t  # on the CPU nothing is copied; a GPU gets a pinned copy


@pytest.mark.parametrize(("spec", "method", "sets"), [
    ("gpt2-tiny-random", "partial", ["method.freeze_layers=1"]),
    ("gpt2-tiny-random", "lora", ["method.lora.top_layers=1"]),
    ("minilm", "probe", []),
])
def test_training_from_the_cache_matches_recomputing_the_prefix(
    spec: str, method: str, sets: list[str], imdb_slice_archive: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same seed, same batches: only the bf16 rounding of the cached states differs."""
    from sentitune.config import load_config
    from sentitune.training import train

    monkeypatch.setenv("SENTITUNE_CACHE", str(tmp_path / "cache"))
    base = [f"model.spec={spec}", f"method.name={method}", f"data.path={imdb_slice_archive}", "data.max_length=48",
            "data.train_size=40", "data.val_size=16", "data.eval_size=24", "train.epochs=2", "train.batch_size=8",
            "train.lr=0.001", "model.dropout=0", "method.lora.dropout=0", *sets]
    plain = train(load_config(None, base), tmp_path / "plain")
    cached = train(load_config(None, [*base, "train.feature_cache=true"]), tmp_path / "cached")
    assert cached["feature_cache"] and not plain["feature_cache"]
    assert len(cached["epoch_seconds"]) == 2
    import csv

    def probs(run: str) -> list[float]:
        with (tmp_path / run / "predictions.csv").open() as f:
            return [float(r["prob_positive"]) for r in csv.DictReader(f)]

    assert probs("plain") != probs("plain")[:1] * len(probs("plain")), "the model must have learned something"
    assert max(abs(a - b) for a, b in zip(probs("plain"), probs("cached"), strict=True)) < 0.02
    assert cached["baseline"]["loss"] == pytest.approx(plain["baseline"]["loss"], abs=1e-3)
    folders = sorted(p.name for p in (tmp_path / "cache" / "features").iterdir())
    # A second run with the same frozen prefix reuses the cache instead of writing a new one.
    train(load_config(None, [*base, "train.feature_cache=true", "train.lr=0.002"]), tmp_path / "again")
    assert sorted(p.name for p in (tmp_path / "cache" / "features").iterdir()) == folders


def test_feature_cache_dir_says_where_the_cache_goes(imdb_slice_archive: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """train.feature_cache_dir: a cold cache for a benchmark, or a faster disk, without touching $SENTITUNE_CACHE."""
    from sentitune.config import load_config
    from sentitune.training import train

    monkeypatch.setenv("SENTITUNE_CACHE", str(tmp_path / "cache"))
    cfg = load_config(None, ["model.spec=gpt2-tiny-random", "method.name=partial", "method.freeze_layers=1",
                             f"data.path={imdb_slice_archive}", "data.max_length=32", "data.train_size=16",
                             "data.val_size=0", "data.eval_size=8", "train.batch_size=8", "train.baseline=false",
                             "train.feature_cache=true", f"train.feature_cache_dir={tmp_path / 'elsewhere'}"])
    first = train(cfg, tmp_path / "run")
    assert first["feature_cache"] and "feature_cache_found_seconds" not in first and "cost_seconds" not in first
    caches = list((tmp_path / "elsewhere").iterdir())
    assert len(caches) == 2  # train and test, each under its own key
    assert not (tmp_path / "cache" / "features").exists()
    # A run that finds the caches built costs, from nothing, what building them took on top of its own time.
    second = train(cfg, tmp_path / "run2")
    built = sum(json.loads((c / "meta.json").read_text())["seconds"] for c in caches)
    assert second["feature_cache_found_seconds"] == pytest.approx(built, abs=0.02) and built > 0
    assert second["cost_seconds"] == pytest.approx(second["wall_seconds"] + built, abs=0.02)
