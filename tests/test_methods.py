"""Every method on a decoder and an encoder: what trains, what stays bit-identical, save/reload, resume.

The models are tiny random-init transformers with real tokenizers: the packaged `gpt2-tiny-random`
(GPT-2 code path, Conv1D, no pad token) and a 2-layer BERT built here with MiniLM's real WordPiece
files. Each run goes through `sentitune.training.train` on real IMDb reviews, is saved, and is loaded
back through `sentitune.models.saving.load_model`. What must train and what must not is written out here per
architecture by parameter name, independently of how models/blocks.py decides it.
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, LlamaConfig, LlamaModel

import sentitune.loop as loop_mod
import sentitune.training as train_mod
from sentitune.config import ExperimentConfig, load_config
from sentitune.models.classifier import SentimentClassifier, pool
from sentitune.models.registry import load_backbone, load_tokenizer, resolve
from sentitune.models.saving import load_model
from sentitune.training import Interrupted, train

pytestmark = pytest.mark.numeric  # run again under the other precision by `make test`

MAX_LENGTH = 48
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

# Per architecture: the frozen prefix of `partial` with freeze_layers=1 (embeddings + block 0),
# and the modules LoRA adapts by default in block i.
FROZEN_PREFIX = {"gpt2": ("wte.", "wpe.", "h.0."), "bert": ("embeddings.", "encoder.layer.0.")}
LORA_MODULES = {
    "gpt2": lambda i: {f"h.{i}.attn.c_attn"},
    "bert": lambda i: {f"encoder.layer.{i}.attention.self.query", f"encoder.layer.{i}.attention.self.value"},
}
TWO_PHASE = "method.phases=[{method: full, epochs: 1, lr: 0.005}, {method: probe, epochs: 1, lr: 0.02}]"
CASES: dict[str, tuple[str, list[str]]] = {
    "probe": ("probe", []),
    "partial": ("partial", ["method.freeze_layers=1"]),
    "full": ("full", []),
    "lora": ("lora", []),
    "lora-top1": ("lora", ["method.lora.top_layers=1"]),
    "two-phase": ("two-phase", [TWO_PHASE]),
}
ARCHS = ("gpt2", "bert")
EVALUATE = train_mod.evaluate  # the real one, whose signature names the arguments of its calls


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random 2-layer, 32-wide BERT with the real MiniLM (bert-base-uncased) WordPiece tokenizer."""
    source = Path(resolve("minilm").source)
    dest = tmp_path_factory.mktemp("tiny-bert")
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copyfile(source / name, dest / name)
    tokenizer = AutoTokenizer.from_pretrained(dest)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(dest)
    return str(dest)


@pytest.fixture(scope="module")
def specs(tiny_bert: str) -> dict[str, str]:
    return {"gpt2": "gpt2-tiny-random", "bert": tiny_bert}


@pytest.fixture(scope="module")
def probe_texts(imdb_slice: dict[str, list[Any]]) -> list[str]:
    """Real test reviews of different lengths, so a batch of them is padded."""
    test = imdb_slice["test"]
    return [test[0].text, test[-1].text, test[len(test) // 2].text[:40]]


def make_cfg(archive: Path, spec: str, method: str, head: str = "softmax", extra: list[str] | None = None,
             train_size: int = 24) -> ExperimentConfig:
    overrides = [
        f"data.path={archive}", f"data.train_size={train_size}", "data.val_size=8", "data.eval_size=16",
        f"data.max_length={MAX_LENGTH}", f"model.spec={spec}", f"model.head={head}", f"method.name={method}",
        "train.epochs=1", "train.batch_size=8", "train.lr=0.005", "train.threads=1", "train.warmup_ratio=0",
        "train.checkpoint_every=null", "train.refuse_one_class=false",  # tiny random models may learn nothing
    ]
    return load_config(None, overrides + (extra or []))


def positive_scores(model: SentimentClassifier, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    tokenizer.padding_side = "right"
    enc = tokenizer(texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model.positive_score(model(enc["input_ids"], enc["attention_mask"]))
    model.train(was_training)
    return out


def evaluate_arguments(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """A call of sentitune.training.evaluate, by parameter name (model, desc: the split...), not by position."""
    return dict(inspect.signature(EVALUATE).bind(*args, **kwargs).arguments)


class Recorder:
    """Wraps the public build/evaluate/save steps sentitune.training calls, to see the model at each point."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, texts: list[str]) -> None:
        self.texts = texts
        self.initial: dict[str, torch.Tensor] = {}
        self.validations: list[dict[str, torch.Tensor]] = []  # the weights each validation saw
        self.final: dict[str, torch.Tensor] = {}
        self.scores: torch.Tensor | None = None
        real_build, real_save = train_mod.build_classifier, train_mod.save_model

        def build(*args: Any, **kwargs: Any) -> SentimentClassifier:
            model = real_build(*args, **kwargs)
            self.initial = params_of(model)
            return model

        def recording(real_evaluate: Any) -> Any:
            def evaluate(*args: Any, **kwargs: Any) -> Any:
                call = evaluate_arguments(*args, **kwargs)
                if call["desc"] == "validation":
                    self.validations.append(params_of(call["model"]))
                return real_evaluate(*args, **kwargs)
            return evaluate

        def save(model: SentimentClassifier, tokenizer: Any, *args: Any, **kwargs: Any) -> None:
            self.final = params_of(model)
            self.scores = positive_scores(model, tokenizer, self.texts)  # before a merge changes the model
            real_save(model, tokenizer, *args, **kwargs)

        monkeypatch.setattr(train_mod, "build_classifier", build)
        monkeypatch.setattr(train_mod, "evaluate", recording(train_mod.evaluate))  # baseline and test
        monkeypatch.setattr(loop_mod, "evaluate", recording(loop_mod.evaluate))  # validation, in the phase loop
        monkeypatch.setattr(train_mod, "save_model", save)


def params_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def base_name(name: str) -> str | None:
    """Classifier parameter name -> name in the plain backbone (None: head or LoRA weight)."""
    if not name.startswith("backbone.") or "lora_" in name:
        return None
    return name.removeprefix("backbone.").removeprefix("base_model.model.").replace(".base_layer.", ".")


def lora_modules(names: list[str]) -> set[str]:
    return {n.removeprefix("backbone.base_model.model.").split(".lora_")[0] for n in names if "lora_" in n}


def should_train(case: str, arch: str, name: str) -> bool:
    if case in ("full", "two-phase"):
        return True
    if case == "partial":
        return not name.startswith(FROZEN_PREFIX[arch])
    return False  # probe and LoRA: the base weights never move


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("case", list(CASES))
def test_method_matrix(case: str, arch: str, specs: dict[str, str], imdb_slice_archive: Path, tmp_path: Path,
                       probe_texts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    method, extra = CASES[case]
    head = ("softmax", "sigmoid")[(list(CASES).index(case) + ARCHS.index(arch)) % 2]  # each method sees both
    rec = Recorder(monkeypatch, probe_texts)
    metrics = train(make_cfg(imdb_slice_archive, specs[arch], method, head, extra), tmp_path / "run")
    assert metrics["test"]["n"] == 16

    # Base weights: trained ones moved, every other one is bit-identical to a fresh load of the base.
    base = dict(load_backbone(resolve(specs[arch]).source).named_parameters())
    mapped = {base_name(n): n for n in rec.final if base_name(n) is not None}
    assert set(mapped) == set(base)
    for name, value in base.items():
        assert torch.equal(rec.initial[mapped[name]], value), name
        changed = not torch.equal(rec.final[mapped[name]], value)
        assert changed == should_train(case, arch, name), f"{case}/{arch}: {name} changed={changed}"

    head_names = [n for n in rec.final if n.startswith("head.")]
    assert rec.final["head.weight"].shape[0] == (1 if head == "sigmoid" else 2)
    assert all(not torch.equal(rec.final[n], rec.initial[n]) for n in head_names)

    # LoRA: adapters exactly where asked (all blocks, or the top one), and all of them trained.
    adapters = lora_modules(list(rec.final))
    expected = set()
    if method == "lora":
        blocks = [1] if case == "lora-top1" else [0, 1]
        expected = set().union(*(LORA_MODULES[arch](i) for i in blocks))
    assert adapters == expected
    for n in rec.final:
        if "lora_" in n:
            assert not torch.equal(rec.final[n], rec.initial[n]), n

    # Parameter accounting matches the names that moved.
    moved = [n for n in rec.final if not torch.equal(rec.final[n], rec.initial[n])]
    params = metrics["parameters"]
    assert params["trainable"] == sum(rec.final[n].numel() for n in moved)
    assert params["total"] == sum(v.numel() for v in rec.final.values())
    assert params["trainable_ratio"] == pytest.approx(params["trainable"] / params["total"])

    if case == "two-phase":  # phase 2 (probe) moved the head only
        first, second = rec.validations  # one epoch per phase: one validation each, at the phase's end
        for n in first:
            assert torch.equal(first[n], second[n]) != n.startswith("head."), n

    # Saved and reloaded through the real loading code: same weights, same scores.
    model_dir = tmp_path / "run" / "model"
    loaded, tokenizer = load_model(model_dir)
    reloaded = params_of(loaded)
    assert set(reloaded) == set(rec.final)
    assert all(torch.equal(reloaded[n], rec.final[n]) for n in reloaded)
    torch.testing.assert_close(positive_scores(loaded, tokenizer, probe_texts), rec.scores, rtol=0, atol=1e-6)
    if arch == "gpt2":
        saved_tok = AutoTokenizer.from_pretrained(model_dir)  # the pad token travels with the model
        assert saved_tok.pad_token == saved_tok.eos_token == "<|endoftext|>"
        assert json.loads((model_dir / "sentitune.json").read_text())["pad_token_id"] == saved_tok.pad_token_id
        if method == "lora":  # Conv1D stores (in, out): PEFT must be told, or the update is transposed
            assert json.loads((model_dir / "adapter" / "adapter_config.json").read_text())["fan_in_fan_out"] is True


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_merge_exports_plain_backbone(arch: str, specs: dict[str, str], imdb_slice_archive: Path,
                                           tmp_path: Path, probe_texts: list[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(monkeypatch, probe_texts)
    train(make_cfg(imdb_slice_archive, specs[arch], "lora", extra=["method.lora.merge=true"]), tmp_path / "run")
    model_dir = tmp_path / "run" / "model"
    assert (model_dir / "backbone" / "config.json").exists() and not (model_dir / "adapter").exists()
    plain = AutoModel.from_pretrained(model_dir / "backbone")  # a plain transformers folder
    assert not any("lora" in k for k in plain.state_dict())
    base = dict(load_backbone(resolve(specs[arch]).source).named_parameters())
    merged = dict(plain.named_parameters())
    targets = set().union(*(LORA_MODULES[arch](i) for i in (0, 1)))
    for name, value in base.items():  # only the adapted weights differ from the base
        assert torch.equal(merged[name], value) != (name.rsplit(".", 1)[0] in targets and name.endswith("weight"))
    loaded, tokenizer = load_model(model_dir)
    torch.testing.assert_close(positive_scores(loaded, tokenizer, probe_texts), rec.scores, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------- pooling


def tiny_llama() -> tuple[LlamaModel, int]:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)
    return LlamaModel(config).eval(), 0


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_last_token_pooling_is_the_same_under_left_and_right_padding(family: str) -> None:
    torch.manual_seed(1)
    if family == "gpt2":
        source = resolve("gpt2-tiny-random").source
        backbone, pad = load_backbone(source), load_tokenizer(source).pad_token_id
    else:
        backbone, pad = tiny_llama()
    model = SentimentClassifier(backbone, backbone.config.hidden_size, "last", 2, 0.0).eval()
    seqs = [torch.randint(10, 400, (n,)).tolist() for n in (9, 4, 6)]
    width = max(map(len, seqs))

    def batch(side: str) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(seqs), width), pad)
        mask = torch.zeros_like(ids)
        for row, s in enumerate(seqs):
            cols = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
            ids[row, cols], mask[row, cols] = torch.tensor(s), 1
        return ids, mask

    with torch.no_grad():
        right, left = model(*batch("right")), model(*batch("left"))
        alone = torch.cat([model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)) for s in seqs])
    torch.testing.assert_close(left, right, rtol=0, atol=1e-5)
    torch.testing.assert_close(right, alone, rtol=0, atol=1e-5)


def test_mean_pooling_ignores_padding(tiny_bert: str) -> None:
    tokenizer = load_tokenizer(tiny_bert)
    torch.manual_seed(0)
    model = SentimentClassifier(load_backbone(tiny_bert), 32, "mean", 2, 0.0).eval()
    short, long = "A fine film.", "A long and winding review of a film that goes on for quite a while."
    with torch.no_grad():
        alone = model(**{k: v for k, v in tokenizer([short], return_tensors="pt").items() if k != "token_type_ids"})
        enc = tokenizer([short, long], padding=True, return_tensors="pt")
        assert enc["attention_mask"][0].sum() < enc["attention_mask"].shape[1]  # the short one is padded
        padded = model(enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(padded[:1], alone, rtol=0, atol=1e-5)

    hidden = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    hidden[0, 2:] = float("nan")  # whatever sits in pad slots, even NaN, must not leak in
    torch.testing.assert_close(pool(hidden, mask, "mean"), torch.stack([hidden[0, :2].mean(0), hidden[1].mean(0)]))
    torch.testing.assert_close(pool(hidden, mask, "last"), torch.stack([hidden[0, 1], hidden[1, 4]]))


# ---------------------------------------------------------------------------- resume and early stopping

RESUME_EXTRA = [
    "method.phases=[{method: lora, epochs: 2, lr: 0.005}, {method: probe, epochs: 1, lr: 0.02}]",
    "train.grad_accum=2", "train.checkpoint_every=2", "train.eval_every=3",
]


def resume_cfg(archive: Path) -> ExperimentConfig:
    """Two phases, dropout on (the RNG matters), accumulation, periodic and validation checkpoints."""
    return make_cfg(archive, "gpt2-tiny-random", "two-phase", "sigmoid", RESUME_EXTRA, train_size=40)


@pytest.fixture(scope="module")
def uninterrupted(imdb_slice_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    return train(resume_cfg(imdb_slice_archive), run), run


@pytest.mark.parametrize("where", [("step", 3), ("step", 7), ("validation", 2)])
def test_resume_after_interrupt_matches_uninterrupted_run(
    where: tuple[str, int], uninterrupted: tuple[dict[str, Any], Path], imdb_slice_archive: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C mid-accumulation in phase 1, in phase 2, and during a validation; then --resume."""
    kind, k = where
    calls = {"n": 0}
    if kind == "step":  # clip_grad_norm_ runs once per optimizer step, after the step's backward passes
        real_clip = torch.nn.utils.clip_grad_norm_

        def clip(*args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == k:
                raise KeyboardInterrupt
            return real_clip(*args, **kwargs)

        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    else:
        real_evaluate = loop_mod.evaluate

        def evaluate(*args: Any, **kwargs: Any) -> Any:
            if evaluate_arguments(*args, **kwargs)["desc"] == "validation":
                calls["n"] += 1
                if calls["n"] == k:
                    raise KeyboardInterrupt
            return real_evaluate(*args, **kwargs)

        monkeypatch.setattr(loop_mod, "evaluate", evaluate)  # validation runs inside the phase loop
    cfg, run = resume_cfg(imdb_slice_archive), tmp_path / "run"
    with pytest.raises(Interrupted, match="checkpoint saved"):
        train(cfg, run)
    assert (run / "checkpoint.pt").exists() and not (run / "metrics.json").exists()
    monkeypatch.undo()

    resumed = train(cfg, run, resume=True)
    expected, expected_run = uninterrupted
    for key in ("test", "validation", "baseline", "parameters", "train_tokens"):
        assert resumed[key] == expected[key], key
    assert (run / "predictions.csv").read_text() == (expected_run / "predictions.csv").read_text()
    assert not (run / "checkpoint.pt").exists()


def test_early_stopping_restores_the_best_weights(imdb_slice_archive: Path, tmp_path: Path, probe_texts: list[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripted validation losses: best at the 2nd evaluation, patience 2 stops at the 4th."""
    losses = iter([0.6, 0.5, 0.55, 0.58, 0.4, 0.3])
    at_validation: list[dict[str, torch.Tensor]] = []
    real_evaluate = loop_mod.evaluate

    def evaluate(*args: Any, **kwargs: Any) -> Any:
        metrics, scores = real_evaluate(*args, **kwargs)
        call = evaluate_arguments(*args, **kwargs)
        if call["desc"] == "validation":
            at_validation.append(params_of(call["model"]))
            metrics = {**metrics, "loss": next(losses)}
        return metrics, scores

    monkeypatch.setattr(loop_mod, "evaluate", evaluate)  # validation runs inside the phase loop
    rec = Recorder(monkeypatch, probe_texts)
    messages: list[str] = []
    cfg = make_cfg(imdb_slice_archive, "gpt2-tiny-random", "full",
                   extra=["train.epochs=3", "train.eval_every=1", "train.patience=2"])
    metrics = train(cfg, tmp_path / "run", report=messages.append)
    assert [h["step"] for h in metrics["validation"]] == [1, 2, 3, 4]  # 9 steps planned, stopped after 4
    assert any("early stopping" in m for m in messages)
    assert all(torch.equal(rec.final[n], at_validation[1][n]) for n in rec.final)
    assert not all(torch.equal(rec.final[n], at_validation[3][n]) for n in rec.final)


# ---------------------------------------------------------------------------- method configs

EXPERIMENTS = Path(__file__).resolve().parents[1] / "configs" / "experiments"
METHOD_CONFIGS = sorted(p for family in ("gpt2", "bert", "smollm2", "minilm", "mpnet")
                        for p in EXPERIMENTS.rglob(f"{family}-*.yaml"))


@pytest.mark.parametrize("path", METHOD_CONFIGS, ids=lambda p: p.stem)
def test_method_configs_load_and_fit_their_model(path: Path) -> None:
    """Every shipped experiment is a valid config; offline ones fit the packaged model's depth."""
    from transformers import AutoConfig

    from sentitune.models.packaged import PACKAGED

    cfg = load_config(path)
    assert cfg.name == path.stem
    if cfg.model.spec in PACKAGED:
        n = AutoConfig.from_pretrained(resolve(cfg.model.spec).source).num_hidden_layers
        if any(p.method == "partial" for p in cfg.phases()):
            assert cfg.method.freeze_layers < n
        assert (cfg.method.lora.top_layers or 0) <= n


# ---------------------------------------------------------------------------- other architectures


def _tiny(family: str) -> tuple[torch.nn.Module, str, tuple[str, ...]]:
    """(random 2-block backbone, model type, names frozen by partial with freeze_layers=1)."""
    from transformers import DistilBertConfig, DistilBertModel, MPNetConfig, MPNetModel

    torch.manual_seed(0)
    if family == "distilbert":
        config = DistilBertConfig(vocab_size=300, dim=32, n_layers=2, n_heads=2, hidden_dim=64)
        return DistilBertModel(config), "distilbert", ("embeddings.", "transformer.layer.0.")
    if family == "mpnet":
        config = MPNetConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64)
        return (MPNetModel(config, add_pooling_layer=False), "mpnet",
                ("embeddings.", "encoder.layer.0.", "encoder.relative_attention_bias."))
    return tiny_llama()[0], "llama", ("embed_tokens.", "layers.0.")


@pytest.mark.parametrize("family", ["distilbert", "mpnet", "llama"])
def test_partial_and_lora_select_the_right_parameters(family: str) -> None:
    """The structural rules hold beyond GPT-2 and BERT: DistilBERT, MPNet and Llama layouts."""
    from sentitune.config import LoraSettings, MethodConfig
    from sentitune.models.lora import add_lora
    from sentitune.models.methods import method

    backbone, model_type, frozen = _tiny(family)
    model = SentimentClassifier(backbone, backbone.config.hidden_size, "mean", 2, 0.0)
    method("partial").apply(model, MethodConfig(freeze_layers=1))
    for name, p in model.backbone.named_parameters():
        assert p.requires_grad != name.startswith(frozen), name
    add_lora(model, LoraSettings(r=2, top_layers=1), model_type)
    method("lora").apply(model, MethodConfig(lora=LoraSettings(r=2, top_layers=1)))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert all((".1." in n) for n in trainable if "lora_" in n)  # top block only
