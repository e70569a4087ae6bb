"""Frozen-prefix features: prefix + top reproduces the full forward; the on-disk cache is keyed and reused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import take

from sentitune.data.batching import collate, encode
from sentitune.features import build_cache, model_fingerprint, prefix_forward, top_forward
from sentitune.models.registry import load_backbone, load_tokenizer, resolve


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
    source, tokenizer, backbone = model
    fingerprint = model_fingerprint(source)
    pad = tokenizer.pad_token_id
    cache = build_cache(backbone, encoded, 1, pad, fingerprint, batch_size=4, root=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1 and not list(tmp_path.glob(".*")), "one folder, no temp left"
    mtime = (cache.folder / "hidden.bin").stat().st_mtime_ns
    again = build_cache(backbone, encoded, 1, pad, fingerprint, batch_size=4, root=tmp_path)
    assert again.folder == cache.folder and (again.folder / "hidden.bin").stat().st_mtime_ns == mtime
    other_n = build_cache(backbone, encoded, 2 if backbone.config.num_hidden_layers > 2 else 0, pad, fingerprint,
                          batch_size=4, root=tmp_path)
    assert other_n.folder != cache.folder
    shorter = encode([], tokenizer, 48)
    assert build_cache(backbone, shorter, 1, pad, fingerprint, root=tmp_path).folder != cache.folder

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
