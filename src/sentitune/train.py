"""The training recipe, top to bottom: data -> model -> baseline -> phases -> best -> test -> save.

A run is a list of phases (one for a single method, two for the published "whole network, then
head only" schedule). Position in training is (phase, micro-batch); batch order for each epoch is a
pure function of the seed, so a resumed run replays exactly what an uninterrupted one would.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from sentitune.config import ConfigError, ExperimentConfig, PhaseConfig, to_dict
from sentitune.data.batching import Encoded, encode, encoding_args, iterate, length_grouped_batches
from sentitune.data.records import Splits
from sentitune.data.sources import load_splits
from sentitune.ensemble import NgramMember, ensemble_metrics, fit_member, member_metrics
from sentitune.errors import DataError
from sentitune.evaluation import evaluate, review_of, score
from sentitune.features import Features, build_cache, prefix_fingerprint, prefix_of
from sentitune.models.classifier import SentimentClassifier
from sentitune.models.methods import build_classifier, method, saved_form
from sentitune.models.registry import ResolvedModel, load_tokenizer, resolve
from sentitune.models.saving import save_model
from sentitune.precision import autocast, pick_precision
from sentitune.precision import name as precision_name
from sentitune.runs import RunDir
from sentitune.runtime import deferred_interrupt, device, seed_everything, set_threads

Report = Callable[[str], None]


class Interrupted(Exception):
    """Training stopped by Ctrl-C after a checkpoint was saved; `--resume` continues."""


# ---------------------------------------------------------------------------- frozen-prefix features


def phase_features(p: Prepared, cfg: ExperimentConfig, phase: PhaseConfig, progress: bool
                   ) -> dict[str, Features] | None:
    """With train.feature_cache, the frozen prefix's states for every split (built once, reused)."""
    model = p.model
    n = method(phase.method).frozen_depth(model, cfg.method)
    if not cfg.train.feature_cache or n == 0:
        return None
    fingerprint = prefix_fingerprint(model.backbone, n)
    root = Path(cfg.train.feature_cache_dir).expanduser() if cfg.train.feature_cache_dir else None  # None: the default
    out = {}
    for split, data in p.encoded.items():
        if len(data):
            started = time.perf_counter()
            cache = build_cache(model.backbone, data, n, p.tokenizer.pad_token_id, fingerprint,
                                cfg.train.eval_batch_size, progress, root=root, backbone_kwargs=model.backbone_kwargs,
                                precision=pick_precision(cfg.train.precision, device()))
            out[split] = Features(n, cache, time.perf_counter() - started)
    return out


# ---------------------------------------------------------------------------- training state


@dataclass
class State:
    """Everything needed to continue exactly where training stopped."""

    phase: int = 0
    micro: int = 0  # micro-batches done in this phase (always at an optimizer-step boundary)
    step: int = 0  # optimizer steps done in this phase
    best_loss: float = math.inf
    best_params: dict[str, torch.Tensor] | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    pending_validation: bool = False  # a step finished whose validation has not (resume runs it first)
    baseline: dict[str, Any] | None = None
    train_seconds: float = 0.0
    train_tokens: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)  # training time of each epoch (cache build included)
    epoch_mark: float = 0.0  # train_seconds when the current epoch began


def tracked_names(model: SentimentClassifier, cfg: ExperimentConfig) -> list[str]:
    """Parameters that any phase trains: the only ones a checkpoint needs to hold."""
    return sorted(set().union(*(method(p.method).trainable(model, cfg.method) for p in cfg.phases())))


def parameter_report(model: SentimentClassifier, cfg: ExperimentConfig, names: list[str]) -> dict[str, Any]:
    """Total / trainable / ratio for the run (trainable: what any phase trains), and per phase."""
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in params.values())
    trainable = sum(params[n].numel() for n in names)
    per_phase = []
    for phase in cfg.phases():
        n = sum(params[name].numel() for name in method(phase.method).trainable(model, cfg.method))
        per_phase.append({"method": phase.method, "trainable": n, "trainable_ratio": n / total})
    lora = sum(p.numel() for name, p in params.items() if "lora_" in name)
    return {"total": total, "trainable": trainable, "trainable_ratio": trainable / total, "lora": lora,
            "phases": per_phase}


def snapshot(model: SentimentClassifier, names: list[str]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach().clone() for n in names}


def restore(model: SentimentClassifier, values: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, v in values.items():
            params[n].copy_(v)


def make_optimizer(model: SentimentClassifier, cfg: ExperimentConfig, lr: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def epoch_batches(data: Encoded, cfg: ExperimentConfig, phase: int, epoch: int) -> list[list[int]]:
    """One epoch's batches of reviews (a windowed review brings all its windows: batch_size counts reviews)."""
    seed = cfg.train.seed * 1000 + phase * 101 + epoch
    return length_grouped_batches(data.lengths(), cfg.train.batch_size, seed=seed)


def micro_batches(data: Encoded, cfg: ExperimentConfig, phase: int, start: int, total: int,
                  pad_id: int) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """(micro index, batch) from `start` to `total`, crossing epochs; each epoch reshuffled by seed."""
    per_epoch = math.ceil(len(data) / cfg.train.batch_size)
    micro = start
    while micro < total:
        epoch, offset = divmod(micro, per_epoch)
        batches = epoch_batches(data, cfg, phase, epoch)
        for batch in iterate(data, batches[offset:], pad_id):
            if micro >= total:
                return
            yield micro, batch
            micro += 1


# ---------------------------------------------------------------------------- the recipe


@dataclass
class Prepared:
    cfg: ExperimentConfig
    splits: Splits
    resolved: ResolvedModel
    tokenizer: Any
    model: SentimentClassifier
    encoded: dict[str, Encoded]


def prepare(cfg: ExperimentConfig, report: Report = lambda s: None) -> Prepared:
    """Data, tokenizer and classifier for `cfg` (everything before the first optimizer step)."""
    seed_everything(cfg.train.seed)
    set_threads(cfg.train.threads)
    resolved = resolve(cfg.model.spec)  # fail fast on a bad spec, before reading data
    splits = load_splits(cfg.data, cfg.train.seed)
    report(f"data: train {len(splits.train)}, validation {len(splits.validation)}, test {len(splits.test)}"
           + (f"; skipped {splits.skipped}" if splits.skipped else ""))
    for warning in splits.warnings:
        report(f"warning: {warning}")
    tokenizer = load_tokenizer(resolved.source)
    model = build_classifier(cfg, resolved, tokenizer.pad_token_id).to(device())
    # Test is tokenized only when something will score it: a run with neither pass never touches it.
    scored = ("train", "validation") + (("test",) if cfg.train.evaluate_test or cfg.train.baseline else ())
    encoded = {
        name: encode(getattr(splits, name) if name in scored else [], tokenizer,
                     **encoding_args(cfg.data, resolved.is_decoder))
        for name in ("train", "validation", "test")
    }
    return Prepared(cfg, splits, resolved, tokenizer, model, encoded)


def train(
    cfg: ExperimentConfig,
    run_dir: Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    report: Report = lambda s: None,
) -> dict[str, Any]:
    """Run the experiment `cfg` into `run_dir`; returns the final metrics (also in metrics.json)."""
    started = time.perf_counter()
    if cfg.method.name == "zero-shot":  # nothing trains: the prompting recipe runs it (`sentitune zero-shot`)
        raise ConfigError("method.name=zero-shot trains nothing: run it with sentitune.zero_shot.run_zero_shot "
                          "(the CLI's `train` and `zero-shot` commands both do)")
    if resume:
        run = RunDir.create(Path(run_dir), cfg, resume=True)
    else:
        RunDir(Path(run_dir)).check_free(overwrite)
    p = prepare(cfg, report)
    model, pad_id, dev = p.model, p.tokenizer.pad_token_id, device()
    precision = pick_precision(cfg.train.precision, dev)  # training (and validation) autocast
    eval_precision = pick_precision(cfg.train.eval_precision, dev)  # baseline and test: what predict uses
    names = tracked_names(model, cfg)
    if len(p.encoded["train"]) == 0:
        raise DataError("no training examples after filtering")
    from transformers import SchedulerType

    if cfg.train.scheduler not in {s.value for s in SchedulerType}:
        raise ConfigError(f"train.scheduler: {cfg.train.scheduler!r} is not one of "
                          f"{', '.join(s.value for s in SchedulerType)}")
    if not resume:  # written only once every check has passed: a failed start leaves nothing behind
        run = RunDir.create(Path(run_dir), cfg, overwrite=overwrite)

    state = State()
    checkpoint = run.load_checkpoint(State) if resume else None  # State is stored as a dict (weights_only)
    if checkpoint is not None:
        state = checkpoint["state"]
        restore(model, checkpoint["params"])
        report(f"resuming: phase {state.phase + 1}, step {state.step}")
    phases = cfg.phases()
    method(phases[state.phase].method).apply(model, cfg.method)
    features, features_phase = phase_features(p, cfg, phases[state.phase], progress), state.phase
    if checkpoint is None and cfg.train.baseline and len(p.encoded["test"]):
        state.baseline, _ = evaluate(model, p.encoded["test"], cfg.train.eval_batch_size, pad_id, eval_precision,
                                     "baseline", progress, features and features["test"])
        run.log({"event": "baseline", "split": "test", **state.baseline})

    params = parameter_report(model, cfg, names)
    report(f"parameters: total {params['total']:,}, trainable {params['trainable']:,} "
           f"({100 * params['trainable_ratio']:.4f}%)")
    try:
        while state.phase < len(phases):
            if state.phase != features_phase:  # the first phase's states were built before the baseline
                features, features_phase = phase_features(p, cfg, phases[state.phase], progress), state.phase
            _train_phase(p, cfg, run, state, names, phases[state.phase], checkpoint, precision, progress, report,
                         features)
            checkpoint = None
            # The next phase starts from the best weights so far, as the final model does.
            if state.best_params is not None:
                restore(model, state.best_params)
            state.phase, state.micro, state.step, state.bad_evals = state.phase + 1, 0, 0, 0
            state.stopped_early = False
    except KeyboardInterrupt:
        where = (f"checkpoint saved in {run.checkpoint_path}" if run.checkpoint_path.exists()
                 else "no checkpoint yet (a resumed run starts over)")
        raise Interrupted(f"interrupted; {where}. Continue with --resume") from None

    if state.best_params is not None:
        restore(model, state.best_params)
    member, ensemble = None, None
    if cfg.ensemble.ngram:
        member, ensemble = _fit_ngram(p, eval_precision, progress, features, report)
        run.log({"event": "ensemble", **ensemble})
    test_metrics, test_scores, test_seconds = None, None, None
    if cfg.train.evaluate_test:  # off: the test set is never scored (search trials choose on validation only)
        test_started = time.perf_counter()
        test_metrics, test_scores = evaluate(model, p.encoded["test"], cfg.train.eval_batch_size, pad_id,
                                             eval_precision, "test", progress, features and features["test"])
        if member is not None and ensemble is not None:
            names, labels = list(cfg.data.labels), p.encoded["test"].labels
            ngram_scores = member.model.proba_examples(p.splits.test)
            ensemble["test"] = member_metrics(labels, names, test_scores, ngram_scores)
            test_scores = member.combine_scores(test_scores, ngram_scores)
            test_metrics = ensemble_metrics(labels, test_scores, names)
        test_seconds = round(time.perf_counter() - test_started
                             + (features["test"].build_seconds if features else 0.0), 2)
        run.log({"event": "final", "split": "test", **test_metrics})
    method(phases[-1].method).apply(model, cfg.method)
    metrics = {
        "name": cfg.name,
        "model": cfg.model.spec,
        "method": cfg.method.name,
        "test": test_metrics,
        "baseline": state.baseline,
        "validation": state.history,
        "parameters": params,
        "data": p.splits.summary() | {"skipped": p.splits.skipped, "warnings": p.splits.warnings},
        "precision": precision_name(precision),
        "eval_precision": precision_name(eval_precision),
        "train_tokens": state.train_tokens,
        "train_seconds": round(state.train_seconds + (ensemble["fit_seconds"] if ensemble else 0.0), 2),
        "train_tokens_per_second": round(state.train_tokens / state.train_seconds, 1) if state.train_seconds else None,
        "epoch_seconds": [round(x, 2) for x in state.epoch_seconds],
        "test_seconds": test_seconds,
        "feature_cache": bool(features),
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    if ensemble is not None:
        metrics["ensemble"] = ensemble
    if test_scores is not None:
        run.write_predictions(p.splits.test, test_scores.tolist(), labels=cfg.data.labels)
    form = saved_form([phase.method for phase in phases], cfg.method)
    save_model(model, p.tokenizer, cfg.model.spec, form, run.model_dir, precision_name(eval_precision),
               config=to_dict(cfg), metrics=metrics, extra=member.save if member else None)
    run.write_metrics(metrics)
    run.clear_checkpoint()
    return metrics


def _fit_ngram(p: Prepared, precision: torch.dtype | None, progress: bool, features: dict[str, Features] | None,
               report: Report) -> tuple[NgramMember, dict[str, Any]]:
    """ensemble.ngram: the n-gram model on the run's training reviews, and the weights that add it to the
    trained transformer, fitted on validation (scored as test will be: eval precision). Its time counts as
    training time."""
    started = time.perf_counter()
    validation, _ = score(p.model, p.encoded["validation"], p.cfg.train.eval_batch_size, p.tokenizer.pad_token_id,
                          precision, "validation", progress, features and features.get("validation"))
    reviews = p.splits.pool if p.cfg.ensemble.ngram_data == "all" and p.splits.pool else p.splits.train
    member, record = fit_member(p.cfg, reviews, p.splits.validation, validation)
    record["ngram_train"] = len(reviews)
    record["fit_seconds"] = round(time.perf_counter() - started, 2)
    val = record["validation"]
    report(f"ensemble: weights transformer {member.weights['transformer']:.3f}, n-gram {member.weights['ngram']:.3f};"
           f" validation accuracy {val['transformer']['accuracy']:.4f} / {val['ngram']['accuracy']:.4f} -> "
           f"{val['ensemble']['accuracy']:.4f}")
    return member, record


def _train_phase(
    p: Prepared,
    cfg: ExperimentConfig,
    run: RunDir,
    state: State,
    names: list[str],
    phase: PhaseConfig,
    checkpoint: dict[str, Any] | None,
    precision: torch.dtype | None,
    progress: bool,
    report: Report,
    features: dict[str, Features] | None = None,
) -> None:
    model, data, pad_id, dev = p.model, p.encoded["train"], p.tokenizer.pad_token_id, device()
    method(phase.method).apply(model, cfg.method)
    features = features or {}
    if "train" in features and state.micro == 0:  # computing the cache is part of the first epoch's cost
        state.train_seconds += features["train"].build_seconds
    accum = cfg.train.grad_accum
    per_epoch = math.ceil(len(data) / cfg.train.batch_size)
    total_micro = max(1, round(phase.epochs * per_epoch))
    total_steps = math.ceil(total_micro / accum)
    optimizer = make_optimizer(model, cfg, phase.lr or cfg.train.lr)
    from transformers import get_scheduler

    warmup = int(cfg.train.warmup_ratio * total_steps)
    scheduler = get_scheduler(cfg.train.scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    # fp16 (GPUs without bf16) needs loss scaling or small gradients underflow to zero; a no-op otherwise.
    scaler = torch.amp.GradScaler(dev.type, enabled=precision == torch.float16)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        torch.set_rng_state(checkpoint["rng"])
        if checkpoint.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
    if state.stopped_early:
        return
    params = dict(model.named_parameters())
    trainable = [params[n] for n in names if params[n].requires_grad]

    def save_checkpoint() -> None:
        run.save_checkpoint({"state": state, "params": snapshot(model, names), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": boundary_rng,
                             "cuda_rng": boundary_cuda_rng})

    def validate() -> bool:
        """Evaluate on validation, keep the best parameters; True when early stopping says stop."""
        if not len(p.encoded["validation"]):
            state.pending_validation = False
            return False
        metrics, _ = evaluate(model, p.encoded["validation"], cfg.train.eval_batch_size, pad_id, precision,
                              "validation", progress, features.get("validation"))
        record = {"event": "validation", "phase": state.phase + 1, "step": state.step,
                  "epoch": round(state.micro / per_epoch, 3), **metrics}
        with deferred_interrupt():  # the record, the best weights and the flag change together
            state.history.append({k: record[k] for k in ("phase", "step", "epoch", "loss", "accuracy", "macro_f1",
                                                         "roc_auc")})
            run.log(record)
            if metrics["loss"] < state.best_loss:
                state.best_loss, state.best_params, state.bad_evals = metrics["loss"], snapshot(model, names), 0
            else:
                state.bad_evals += 1
            state.pending_validation = False
        report(f"phase {state.phase + 1} epoch {record['epoch']:.2f}: validation loss {metrics['loss']:.4f}, "
               f"accuracy {metrics['accuracy']:.4f}")
        return cfg.train.patience is not None and state.bad_evals >= cfg.train.patience

    def after_validation(stop: bool) -> bool:
        """Checkpoint after a validation; True when training this phase ends here (early stop)."""
        if stop:
            state.stopped_early = True
            report(f"early stopping: no validation improvement in {cfg.train.patience} evaluations")
        save_checkpoint()
        return stop

    model.train()
    boundary_rng = torch.get_rng_state()
    boundary_cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    bar = tqdm(total=total_steps, initial=state.step, desc=f"phase {state.phase + 1}/{len(cfg.phases())} "
               f"{phase.method}", disable=not progress, unit="step")
    tick = time.perf_counter()
    pending_tokens = 0  # tokens of a step still accumulating: counted only once the step is taken
    window: list[float] = []  # micro-batch losses since the last training-loss record (not checkpointed)
    try:
        if state.pending_validation:  # interrupted during a validation: run it before going on
            if after_validation(validate()):
                return
            tick = time.perf_counter()
        for micro, batch in micro_batches(data, cfg, state.phase, state.micro, total_micro, pad_id):
            with autocast(dev, precision):
                logits = model(batch["input_ids"].to(dev), batch["attention_mask"].to(dev),
                               prefix_of(features.get("train"), batch, dev), review_of(batch, dev))
            loss = model.loss(logits, batch["labels"].to(dev))  # per review: its windows' logits were pooled
            scaler.scale(loss / accum).backward()
            window.append(loss.item())
            pending_tokens += int(batch["attention_mask"].sum())
            done = micro + 1
            if done % accum and done != total_micro:
                continue
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(trainable, cfg.train.max_grad_norm)
            every = cfg.train.eval_every
            with deferred_interrupt():
                scaler.step(optimizer)  # skips the step if fp16 gradients overflowed
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                # An epoch ends inside this step when a boundary lies in (previous micro, done]: with
                # gradient accumulation the step need not end exactly on it.
                epoch_end = done // per_epoch > state.micro // per_epoch or done == total_micro
                state.micro, state.step = done, state.step + 1
                state.train_tokens, pending_tokens = state.train_tokens + pending_tokens, 0
                boundary_rng = torch.get_rng_state()
                boundary_cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
                now = time.perf_counter()
                state.train_seconds, tick = state.train_seconds + now - tick, now
                state.pending_validation = bool(epoch_end or (every and state.step % every == 0))
                if epoch_end:
                    state.epoch_seconds.append(state.train_seconds - state.epoch_mark)
                    state.epoch_mark = state.train_seconds
            bar.update(1)
            bar.set_postfix(loss=f"{window[-1]:.4f}")
            if cfg.train.log_every and (state.step % cfg.train.log_every == 0 or epoch_end):
                run.log({"event": "train", "phase": state.phase + 1, "step": state.step,
                         "epoch": round(state.micro / per_epoch, 3), "loss": sum(window) / len(window),
                         "lr": scheduler.get_last_lr()[0]})
                window.clear()
            if state.pending_validation:
                stop = after_validation(validate())
                tick = time.perf_counter()
                if stop:
                    return
            elif cfg.train.checkpoint_every and state.step % cfg.train.checkpoint_every == 0:
                save_checkpoint()
                tick = time.perf_counter()
    except KeyboardInterrupt:
        optimizer.zero_grad(set_to_none=True)  # drop a half-accumulated step: resume redoes it
        save_checkpoint()
        raise
    finally:
        bar.close()
