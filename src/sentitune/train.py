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
from sentitune.data.batching import Encoded, collate, encode, encoding_args, length_grouped_batches
from sentitune.data.records import Splits
from sentitune.data.sources import load_splits
from sentitune.distributed import Cluster, DistributedError, cluster
from sentitune.ensemble import NgramMember, ensemble_metrics, fit_member, member_metrics
from sentitune.errors import DataError
from sentitune.evaluation import evaluate, review_of, score
from sentitune.features import Features, build_cache, hold_if_fits, prefix_fingerprint, prefix_of
from sentitune.kinds import kind_of
from sentitune.models.classifier import SentimentClassifier
from sentitune.models.methods import build_classifier, method, saved_form
from sentitune.models.registry import ResolvedModel, load_tokenizer, resolve
from sentitune.models.saving import save_model
from sentitune.precision import autocast, pick_precision
from sentitune.precision import name as precision_name
from sentitune.runs import FollowerRun, RunDir
from sentitune.runtime import deferred_interrupt, device, seed_everything, set_threads, to_device

Report = Callable[[str], None]


class Interrupted(Exception):
    """Training stopped by Ctrl-C after a checkpoint was saved; `--resume` continues."""


# ---------------------------------------------------------------------------- frozen-prefix features


def phase_features(p: Prepared, cfg: ExperimentConfig, phase: PhaseConfig, progress: bool
                   ) -> dict[str, Features] | None:
    """With train.feature_cache, the frozen prefix's states for every split (built once, reused; with several
    processes, built by the main one of each machine and read by the others)."""
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
            with p.cluster.main_first():
                cache = build_cache(model.backbone, data, n, p.tokenizer.pad_token_id, fingerprint,
                                    cfg.train.eval_batch_size, progress, root=root,
                                    backbone_kwargs=model.backbone_kwargs,
                                    precision=pick_precision(cfg.train.precision, device()))
            hold_if_fits(cache, device())  # a GPU: the states in its memory, when they fit (half its free memory)
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


def micro_batches(data: Encoded, cfg: ExperimentConfig, phase: int, start: int, total: int, pad_id: int,
                  cl: Cluster | None = None) -> Iterator[tuple[int, dict[str, torch.Tensor], float, int]]:
    """(micro index, this process's share of the batch, the weight of its mean loss, the whole batch's
    tokens) from `start` to `total`, crossing epochs; each epoch reshuffled by seed."""
    cl = cl or Cluster()
    per_epoch = math.ceil(len(data) / cfg.train.batch_size)
    lengths = data.lengths()
    micro = start
    while micro < total:
        epoch, offset = divmod(micro, per_epoch)
        for batch in epoch_batches(data, cfg, phase, epoch)[offset:]:
            if micro >= total:
                return
            part, weight = cl.share(batch)
            yield micro, collate(data, part, pad_id), weight, sum(lengths[i] for i in batch)
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
    cluster: Cluster = field(default_factory=Cluster)


def prepare(cfg: ExperimentConfig, report: Report = lambda s: None, cl: Cluster | None = None) -> Prepared:
    """Data, tokenizer and classifier for `cfg` (everything before the first optimizer step)."""
    cl = cl or Cluster()
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
    if cl.rank:  # the same weights everywhere (and DDP copies rank 0's), but each process its own dropout
        torch.manual_seed(cfg.train.seed + 1_000_003 * cl.rank)
    return Prepared(cfg, splits, resolved, tokenizer, model, encoded, cl)


def train(
    cfg: ExperimentConfig,
    run_dir: Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    report: Report = lambda s: None,
) -> dict[str, Any]:
    """Run the experiment `cfg` into `run_dir`; returns the final metrics (also in metrics.json).

    Under `accelerate launch` / torchrun every process runs this; they train data parallel and only the
    main process writes `run_dir` (sentitune.distributed)."""
    started = time.perf_counter()
    if not kind_of(cfg).trains:  # nothing to train: its own recipe runs it (recipes.recipe_of)
        raise ConfigError(f"method.name={cfg.method.name} trains no transformer: run it with "
                          "sentitune.recipes.recipe_of(cfg).run (the CLI's `train` does)")
    cl = cluster()
    if not cl.main:  # one voice: the main process reports and draws the progress bars
        report, progress = (lambda s: None), False
    run, p, names = _start(cfg, Path(run_dir), resume, overwrite, report, cl)
    model, pad_id, dev = p.model, p.tokenizer.pad_token_id, device()
    precision = pick_precision(cfg.train.precision, dev)  # training (and validation) autocast
    eval_precision = pick_precision(cfg.train.eval_precision, dev)  # baseline and test: what predict uses
    state, checkpoint = _resume(run, model, resume, report, cl)
    phases = cfg.phases()
    method(phases[state.phase].method).apply(model, cfg.method)
    features, features_phase = phase_features(p, cfg, phases[state.phase], progress), state.phase
    if checkpoint is None and cfg.train.baseline and len(p.encoded["test"]):
        state.baseline, _ = evaluate(model, p.encoded["test"], cfg.train.eval_batch_size, pad_id, eval_precision,
                                     "baseline", progress, features and features["test"], cl)
        run.log({"event": "baseline", "split": "test", **state.baseline})

    params = parameter_report(model, cfg, names)
    report(f"parameters: total {params['total']:,}, trainable {params['trainable']:,} "
           f"({100 * params['trainable_ratio']:.4f}%)")
    try:
        while state.phase < len(phases):
            if state.phase != features_phase:  # the first phase's states were built before the baseline
                features, features_phase = phase_features(p, cfg, phases[state.phase], progress), state.phase
            PhaseLoop(p, cfg, run, state, names, phases[state.phase], precision, progress, report,
                      features).run(checkpoint)
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
        test_metrics, test_scores, test_seconds = _score_test(p, eval_precision, progress, features, member, ensemble)
        run.log({"event": "final", "split": "test", **test_metrics})
    method(phases[-1].method).apply(model, cfg.method)
    metrics = _metrics(p, state, params, test_metrics, test_seconds, ensemble, precision, eval_precision, features,
                       time.perf_counter() - started)
    if test_scores is not None:
        run.write_predictions(p.splits.test, test_scores.tolist(), labels=cfg.data.labels)
    form = saved_form([phase.method for phase in phases], cfg.method)
    if cl.main:
        save_model(model, p.tokenizer, cfg.model.spec, form, run.model_dir, precision_name(eval_precision),
                   config=to_dict(cfg), metrics=metrics, extra=member.save if member else None)
    run.write_metrics(metrics)
    run.clear_checkpoint()
    cl.barrier()  # the others return once the main process has written the run
    return metrics


def _start(cfg: ExperimentConfig, run_dir: Path, resume: bool, overwrite: bool, report: Report,
           cl: Cluster) -> tuple[RunDir, Prepared, list[str]]:
    """The run directory, everything before the first step and the names of the parameters any phase trains,
    every check made before the directory is written (a method's own, such as partial's freeze depth, too): a
    failed start leaves nothing behind (only the main process writes; the others follow)."""
    run: RunDir = FollowerRun(run_dir)
    if cl.main and resume:
        run = RunDir.create(run_dir, cfg, resume=True)
    elif cl.main:
        RunDir(run_dir).check_free(overwrite)
    p = prepare(cfg, report, cl)
    names = tracked_names(p.model, cfg)  # each phase's method checks itself here (freeze depth, LoRA targets)
    if len(p.encoded["train"]) == 0:
        raise DataError("no training examples after filtering")
    from transformers import SchedulerType

    if cfg.train.scheduler not in {s.value for s in SchedulerType}:
        raise ConfigError(f"train.scheduler: {cfg.train.scheduler!r} is not one of "
                          f"{', '.join(s.value for s in SchedulerType)}")
    if cl.main and not resume:
        run = RunDir.create(run_dir, cfg, overwrite=overwrite)
    return run, p, names


def _resume(run: RunDir, model: SentimentClassifier, resume: bool, report: Report,
            cl: Cluster) -> tuple[State, dict[str, Any] | None]:
    """A fresh state, or a checkpoint's (its weights restored into `model`); the checkpoint, for the phase loop."""
    checkpoint = run.load_checkpoint(State) if resume else None  # State is stored as a dict (weights_only)
    if checkpoint is None:
        return State(), None
    if checkpoint.get("world", 1) != cl.world:
        raise DistributedError(f"{run.checkpoint_path}: written by {checkpoint.get('world', 1)} process(es); "
                               f"resume with the same number (this launch has {cl.world})")
    state = checkpoint["state"]
    restore(model, checkpoint["params"])
    report(f"resuming: phase {state.phase + 1}, step {state.step}")
    return state, checkpoint


def _score_test(p: Prepared, precision: torch.dtype | None, progress: bool, features: dict[str, Features] | None,
                member: NgramMember | None, ensemble: dict[str, Any] | None
                ) -> tuple[dict[str, Any], Any, float]:
    """The final test pass (with an ensemble: each model alone and both together): metrics, scores, seconds."""
    started = time.perf_counter()
    cfg = p.cfg
    metrics, scores = evaluate(p.model, p.encoded["test"], cfg.train.eval_batch_size, p.tokenizer.pad_token_id,
                               precision, "test", progress, features and features["test"], p.cluster)
    if member is not None and ensemble is not None:
        names, labels = list(cfg.data.labels), p.encoded["test"].labels
        ngram_scores = member.model.proba_examples(p.splits.test)
        ensemble["test"] = member_metrics(labels, names, scores, ngram_scores)
        scores = member.combine_scores(scores, ngram_scores)
        metrics = ensemble_metrics(labels, scores, names)
    seconds = round(time.perf_counter() - started + (features["test"].build_seconds if features else 0.0), 2)
    return metrics, scores, seconds


def _metrics(p: Prepared, state: State, params: dict[str, Any], test: dict[str, Any] | None,
             test_seconds: float | None, ensemble: dict[str, Any] | None, precision: torch.dtype | None,
             eval_precision: torch.dtype | None, features: dict[str, Features] | None, wall: float) -> dict[str, Any]:
    """metrics.json: test and baseline metrics, the validation history, parameters, data, precisions, timings."""
    cfg = p.cfg
    metrics = {
        "name": cfg.name,
        "model": cfg.model.spec,
        "method": cfg.method.name,
        "test": test,
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
        "wall_seconds": round(wall, 2),
    }
    if ensemble is not None:
        metrics["ensemble"] = ensemble
    return metrics


def _fit_ngram(p: Prepared, precision: torch.dtype | None, progress: bool, features: dict[str, Features] | None,
               report: Report) -> tuple[NgramMember, dict[str, Any]]:
    """ensemble.ngram: the n-gram model on the run's training reviews, and the weights that add it to the
    trained transformer, fitted on validation (scored as test will be: eval precision). Its time counts as
    training time."""
    started = time.perf_counter()
    validation, _ = score(p.model, p.encoded["validation"], p.cfg.train.eval_batch_size, p.tokenizer.pad_token_id,
                          precision, "validation", progress, features and features.get("validation"), p.cluster)
    reviews = p.splits.pool if p.cfg.ensemble.ngram_data == "all" and p.splits.pool else p.splits.train
    member, record = fit_member(p.cfg, reviews, p.splits.validation, validation)
    record["ngram_train"] = len(reviews)
    record["fit_seconds"] = round(time.perf_counter() - started, 2)
    val = record["validation"]
    report(f"ensemble: weights transformer {member.weights['transformer']:.3f}, n-gram {member.weights['ngram']:.3f};"
           f" validation accuracy {val['transformer']['accuracy']:.4f} / {val['ngram']['accuracy']:.4f} -> "
           f"{val['ensemble']['accuracy']:.4f}")
    return member, record


class PhaseLoop:
    """One phase of training, from where `state` stands to the phase's end (or an early stop).

    Read `run` top to bottom: micro-batches go forward and backward; every `train.grad_accum` of them make an
    optimizer step; after a step come the training-loss record, then a validation (an epoch ended, or
    `train.eval_every`) or a checkpoint. The RNG state is taken at each step boundary, so a checkpoint (and a
    resume from it) replays exactly what an uninterrupted run does.
    """

    def __init__(self, p: Prepared, cfg: ExperimentConfig, rundir: RunDir, state: State, names: list[str],
                 phase: PhaseConfig, precision: torch.dtype | None, progress: bool, report: Report,
                 features: dict[str, Features] | None = None) -> None:
        self.p, self.cfg, self.rundir, self.state, self.names, self.phase = p, cfg, rundir, state, names, phase
        self.precision, self.progress, self.report = precision, progress, report
        self.model, self.data, self.cl = p.model, p.encoded["train"], p.cluster
        self.pad_id, self.dev = p.tokenizer.pad_token_id, device()
        method(phase.method).apply(self.model, cfg.method)
        self.net = self.cl.wrap(self.model, self.dev)  # per phase: DDP averages the gradients this phase trains
        self.features = features or {}
        if "train" in self.features and state.micro == 0:  # computing the cache is part of the first epoch's cost
            state.train_seconds += self.features["train"].build_seconds
        self.per_epoch = math.ceil(len(self.data) / cfg.train.batch_size)
        self.total_micro = max(1, round(phase.epochs * self.per_epoch))
        self.total_steps = math.ceil(self.total_micro / cfg.train.grad_accum)
        self.optimizer = make_optimizer(self.model, cfg, phase.lr or cfg.train.lr)
        from transformers import get_scheduler

        self.scheduler = get_scheduler(cfg.train.scheduler, self.optimizer,
                                       num_warmup_steps=int(cfg.train.warmup_ratio * self.total_steps),
                                       num_training_steps=self.total_steps)
        # fp16 (GPUs without bf16) needs loss scaling or small gradients underflow to zero; a no-op otherwise.
        self.scaler = torch.amp.GradScaler(self.dev.type, enabled=precision == torch.float16)
        params = dict(self.model.named_parameters())
        self.trainable = [params[n] for n in names if params[n].requires_grad]
        self.pending_tokens = 0  # tokens of a step still accumulating: counted only once the step is taken
        self.window = [0.0, 0.0]  # loss x reviews, reviews since the last training-loss record (not checkpointed)

    def run(self, checkpoint: dict[str, Any] | None) -> None:
        state, accum = self.state, self.cfg.train.grad_accum
        if checkpoint is not None:
            self.restore(checkpoint)
        if state.stopped_early:
            return
        self.model.train()
        self.mark_boundary()
        self.bar = tqdm(total=self.total_steps, initial=state.step, desc=f"phase {state.phase + 1}/"
                        f"{len(self.cfg.phases())} {self.phase.method}", disable=not self.progress, unit="step")
        self.tick = time.perf_counter()
        try:
            if state.pending_validation:  # interrupted during a validation: run it before going on
                if self.after_validation(self.validate()):
                    return
                self.tick = time.perf_counter()
            for micro, batch, weight, tokens in micro_batches(self.data, self.cfg, state.phase, state.micro,
                                                              self.total_micro, self.pad_id, self.cl):
                done = micro + 1
                sync = not (done % accum and done != self.total_micro)  # the step's last micro-batch: all-reduced
                loss = self.forward_backward(batch, weight, sync)
                self.pending_tokens += tokens
                if sync and self.after_step(loss, self.optimizer_step(done)):
                    return
        except KeyboardInterrupt:
            self.optimizer.zero_grad(set_to_none=True)  # drop a half-accumulated step: resume redoes it
            if self.cl.world == 1:  # several processes may stop at different steps: their last common checkpoint
                self.save_checkpoint()
            raise
        finally:
            self.bar.close()

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """The optimizer, scheduler, loss scaler and RNG states of a checkpoint (this process's, with several)."""
        cl = self.cl
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        torch.set_rng_state(checkpoint["rng"] if cl.world == 1 else checkpoint["rngs"][cl.rank])
        if checkpoint.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng"] if cl.world == 1 else checkpoint["cuda_rngs"][cl.rank])

    def mark_boundary(self) -> None:
        """The RNG state at a step boundary: what a checkpoint stores, so a resume draws the same dropout."""
        self.boundary_rng = torch.get_rng_state()
        self.boundary_cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def forward_backward(self, batch: dict[str, torch.Tensor], weight: float, sync: bool) -> torch.Tensor:
        """One micro-batch (this process's share of it): the loss, its gradients accumulated."""
        dev = self.dev
        with self.cl.no_sync(self.net, sync):
            with autocast(dev, self.precision):
                logits = self.net(to_device(batch["input_ids"], dev), to_device(batch["attention_mask"], dev),
                                  prefix_of(self.features.get("train"), batch, dev), review_of(batch, dev))
            loss = self.model.loss(logits, to_device(batch["labels"], dev))  # per review (window logits pooled)
            self.scaler.scale(loss * (weight / self.cfg.train.grad_accum)).backward()
        reviews = len(batch["labels"]) if weight else 0
        self.window[0], self.window[1] = self.window[0] + loss.item() * reviews, self.window[1] + reviews
        return loss

    def optimizer_step(self, done: int) -> bool:
        """Clip, step, and move the state on, uninterruptible; True when an epoch ended inside this step."""
        state, cfg = self.state, self.cfg
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(self.trainable, cfg.train.max_grad_norm)
        every = cfg.train.eval_every
        with deferred_interrupt():
            self.scaler.step(self.optimizer)  # skips the step if fp16 gradients overflowed
            self.scaler.update()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            # An epoch ends inside this step when a boundary lies in (previous micro, done]: with
            # gradient accumulation the step need not end exactly on it.
            epoch_end = done // self.per_epoch > state.micro // self.per_epoch or done == self.total_micro
            state.micro, state.step = done, state.step + 1
            state.train_tokens, self.pending_tokens = state.train_tokens + self.pending_tokens, 0
            self.mark_boundary()
            now = time.perf_counter()
            state.train_seconds, self.tick = state.train_seconds + now - self.tick, now
            state.pending_validation = bool(epoch_end or (every and state.step % every == 0))
            if epoch_end:
                state.epoch_seconds.append(state.train_seconds - state.epoch_mark)
                state.epoch_mark = state.train_seconds
        return epoch_end

    def after_step(self, loss: torch.Tensor, epoch_end: bool) -> bool:
        """The training-loss record, then a validation or a checkpoint; True when the phase stops early."""
        state, cfg = self.state, self.cfg
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss.item():.4f}")
        if cfg.train.log_every and (state.step % cfg.train.log_every == 0 or epoch_end):
            total, reviews = self.cl.sum(self.window)  # every process's reviews: the same for any world size
            self.rundir.log({"event": "train", "phase": state.phase + 1, "step": state.step,
                             "epoch": round(state.micro / self.per_epoch, 3), "loss": total / max(1.0, reviews),
                             "lr": self.scheduler.get_last_lr()[0]})
            self.window = [0.0, 0.0]
        if state.pending_validation:
            stop = self.after_validation(self.validate())
            self.tick = time.perf_counter()
            return stop
        if cfg.train.checkpoint_every and state.step % cfg.train.checkpoint_every == 0:
            self.save_checkpoint()
            self.tick = time.perf_counter()
        return False

    def validate(self) -> bool:
        """Evaluate on validation, keep the best parameters; True when early stopping says stop."""
        state, cfg, p = self.state, self.cfg, self.p
        if not len(p.encoded["validation"]):
            state.pending_validation = False
            return False
        metrics, _ = evaluate(self.model, p.encoded["validation"], cfg.train.eval_batch_size, self.pad_id,
                              self.precision, "validation", self.progress, self.features.get("validation"), self.cl)
        record = {"event": "validation", "phase": state.phase + 1, "step": state.step,
                  "epoch": round(state.micro / self.per_epoch, 3), **metrics}
        with deferred_interrupt():  # the record, the best weights and the flag change together
            state.history.append({k: record[k] for k in ("phase", "step", "epoch", "loss", "accuracy", "macro_f1",
                                                         "roc_auc")})
            self.rundir.log(record)
            if metrics["loss"] < state.best_loss:
                state.best_loss, state.best_params, state.bad_evals = metrics["loss"], snapshot(self.model,
                                                                                                self.names), 0
            else:
                state.bad_evals += 1
            state.pending_validation = False
        self.report(f"phase {state.phase + 1} epoch {record['epoch']:.2f}: validation loss {metrics['loss']:.4f}, "
                    f"accuracy {metrics['accuracy']:.4f}")
        return cfg.train.patience is not None and state.bad_evals >= cfg.train.patience

    def after_validation(self, stop: bool) -> bool:
        """Checkpoint after a validation; True when training this phase ends here (early stop)."""
        if stop:
            self.state.stopped_early = True
            self.report(f"early stopping: no validation improvement in {self.cfg.train.patience} evaluations")
        self.save_checkpoint()
        return stop

    def save_checkpoint(self) -> None:
        """Every process calls it at the same step: the others' RNG states are gathered into the main's file."""
        cl, extra = self.cl, {}
        if cl.world > 1:
            rngs = cl.gather((self.boundary_rng, self.boundary_cuda_rng))
            extra = {"world": cl.world, "rngs": [r for r, _ in rngs], "cuda_rngs": [c for _, c in rngs]}
        self.rundir.save_checkpoint({"state": self.state, "params": snapshot(self.model, self.names),
                                     "optimizer": self.optimizer.state_dict(),
                                     "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                                     "rng": self.boundary_rng, "cuda_rng": self.boundary_cuda_rng, **extra})
