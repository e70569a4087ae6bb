"""One phase of training as a loop that reads top to bottom, and the state a checkpoint holds.

`PhaseLoop.run` is the whole story: micro-batches forward and backward, an optimizer step every
`train.grad_accum` of them, a training-loss record, then a validation or a checkpoint. Everything a resume
needs is in `State` (plus the optimizer, scheduler, scaler and RNG states the checkpoint stores beside it).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from sentitune.config import ExperimentConfig, PhaseConfig
from sentitune.data.batching import Encoded, micro_batches
from sentitune.data.records import Splits
from sentitune.distributed import Cluster
from sentitune.evaluation import evaluate, forward
from sentitune.features import Features
from sentitune.metrics import answered
from sentitune.models.classifier import SentimentClassifier
from sentitune.models.contrastive import supervised_contrastive_loss
from sentitune.models.methods import method
from sentitune.models.registry import ResolvedModel
from sentitune.precision import autocast
from sentitune.runs import RunDir
from sentitune.runtime import Report, deferred_interrupt, device, to_device

FEW_STEPS = 50  # a phase shorter than this many optimizer steps gets a warning
STRETCHED_VALIDATIONS = 10  # about how many validations a phase stretched by train.min_steps runs
MIN_STEPS_HINT = 150  # what the warning suggests (configs/experiments/quickstart.yaml sets it)


@dataclass
class Prepared:
    cfg: ExperimentConfig
    splits: Splits
    resolved: ResolvedModel
    tokenizer: Any
    model: SentimentClassifier
    encoded: dict[str, Encoded]
    cluster: Cluster = field(default_factory=Cluster)
    self_training: dict[str, Any] | None = None  # self_train: what the teacher did (metrics.json)


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
        self.contrastive = phase.loss == "contrastive"
        if self.contrastive:  # the loss reads the pooled states: the head (and a window scorer) wait for a later phase
            for name, param in self.model.named_parameters():
                param.requires_grad = param.requires_grad and not name.startswith(("head.", "window_scorer."))
        self.net = self.cl.wrap(self.model, self.dev)  # per phase: DDP averages the gradients this phase trains
        self.features = features or {}
        if "train" in self.features and state.micro == 0:  # computing the cache is part of the first epoch's cost
            state.train_seconds += self.features["train"].build_seconds
        self.per_epoch = math.ceil(len(self.data) / cfg.train.batch_size)
        # train.min_steps: small data trains more epochs, so a phase is never a handful of steps; a phase so
        # stretched validates (and checkpoints) about STRETCHED_VALIDATIONS times, not after each short epoch.
        natural = max(1, round(phase.epochs * self.per_epoch))
        self.total_micro = max(natural, cfg.train.min_steps * cfg.train.grad_accum)
        self.validate_epochs = 1 if self.total_micro == natural else math.ceil(
            self.total_micro / self.per_epoch / STRETCHED_VALIDATIONS)
        self.total_steps = math.ceil(self.total_micro / cfg.train.grad_accum)
        if self.total_steps < FEW_STEPS and state.micro == 0:
            report(f"warning: phase {state.phase + 1} trains {self.total_steps} optimizer steps ({len(self.data)} "
                   f"reviews, batch {cfg.train.batch_size}, {phase.epochs:g} epochs): too few to learn much; "
                   f"set train.min_steps (e.g. {MIN_STEPS_HINT}) or more epochs")
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
            for micro, batch, weight, tokens in micro_batches(self.data, self.cfg.train.batch_size,
                                                              self.cfg.train.seed, state.phase, state.micro,
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
            labels = to_device(batch["labels"], dev)
            with autocast(dev, self.precision):
                out = forward(self.net, batch, dev, self.features.get("train"), embed=self.contrastive)
            if self.contrastive:  # pooled states of this process's share of the batch
                loss = supervised_contrastive_loss(out, labels, self.phase.temperature)
            else:
                loss = self.model.loss(out, labels)  # per review (window logits pooled)
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
            validate = epoch_end and ((done // self.per_epoch) % self.validate_epochs == 0 or done == self.total_micro)
            state.pending_validation = bool(validate or (every and state.step % every == 0))
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
        if not len(p.encoded["validation"]) or self.contrastive:  # no head yet to score with: a checkpoint only
            state.pending_validation = False
            return False
        metrics, _ = evaluate(self.model, p.encoded["validation"], cfg.train.eval_batch_size, self.pad_id,
                              self.precision, "validation", self.progress, self.features.get("validation"), self.cl)
        record = {"event": "validation", "phase": state.phase + 1, "step": state.step,
                  "epoch": round(state.micro / self.per_epoch, 3), **metrics}
        with deferred_interrupt():  # the record, the best weights and the flag change together
            state.history.append({**{k: record[k] for k in ("phase", "step", "epoch", "loss", "accuracy", "macro_f1",
                                                            "roc_auc")}, "answered": answered(metrics)})
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
