"""The training recipe, top to bottom: data -> model -> baseline -> phases -> best -> test -> save.

A run is a list of phases (one for a single method, two for the published "whole network, then
head only" schedule). Position in training is (phase, micro-batch); batch order for each epoch is a
pure function of the seed, so a resumed run replays exactly what an uninterrupted one would.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from sentitune.config import ConfigError, ExperimentConfig, PhaseConfig, to_dict
from sentitune.data.batching import encode, encoding_args
from sentitune.data.sources import load_splits
from sentitune.distributed import Cluster, DistributedError, cluster
from sentitune.ensemble import NgramMember, ensemble_metrics, fit_member, member_metrics
from sentitune.errors import DataError, RunError
from sentitune.evaluation import evaluate, score
from sentitune.features import Features, build_cache, hold_if_fits, prefix_fingerprint
from sentitune.kinds import kind_of
from sentitune.loop import PhaseLoop, Prepared, State, restore
from sentitune.models.blocks import count_parameters
from sentitune.models.classifier import SentimentClassifier
from sentitune.models.methods import build_classifier, method, saved_form
from sentitune.models.registry import load_tokenizer, resolve
from sentitune.models.saving import save_model
from sentitune.precision import name as precision_name
from sentitune.precision import pick_precision
from sentitune.runs import FollowerRun, RunDir
from sentitune.runtime import Report, device, seed_everything, set_threads
from sentitune.self_training import self_train


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


def cache_costs(features: dict[str, Features] | None, costs: dict[str, float]) -> dict[str, float]:
    """`costs` (cache folder -> what it costs this run) with `features`' caches added: 0 for one built now, its
    recorded build time for one found on disk, so a run's cost counts what it would take from nothing. A folder
    seen again (built in one phase, found in the next) keeps its first entry."""
    for f in (features or {}).values():
        costs.setdefault(str(f.cache.folder), f.found_seconds)
    return costs


# ---------------------------------------------------------------------------- training state


def tracked_names(model: SentimentClassifier, cfg: ExperimentConfig) -> list[str]:
    """Parameters that any phase trains: the only ones a checkpoint needs to hold."""
    return sorted(set().union(*(method(p.method).trainable(model, cfg.method) for p in cfg.phases())))


def parameter_report(model: SentimentClassifier, cfg: ExperimentConfig, names: list[str]) -> dict[str, Any]:
    """Total / trainable / ratio for the run (trainable: what any phase trains), and per phase."""
    phases = []
    for phase in cfg.phases():
        counts = count_parameters(model, method(phase.method).trainable(model, cfg.method))
        phases.append({"method": phase.method, "trainable": counts["trainable"],
                       "trainable_ratio": counts["trainable_ratio"]})
    return {**count_parameters(model, names), "phases": phases}


# ---------------------------------------------------------------------------- the recipe


def prepare(cfg: ExperimentConfig, report: Report = lambda s: None, cl: Cluster | None = None,
            progress: bool = False) -> Prepared:
    """Data (with self_train, the teacher's pseudo-labels added), tokenizer and classifier for `cfg` (everything
    before the first optimizer step)."""
    cl = cl or Cluster()
    seed_everything(cfg.train.seed)
    set_threads(cfg.train.threads)
    resolved = resolve(cfg.model.spec)  # fail fast on a bad spec, before reading data
    splits = load_splits(cfg.data, cfg.train.seed)
    report(f"data: train {len(splits.train)}, validation {len(splits.validation)}, test {len(splits.test)}"
           + (f"; skipped {splits.skipped}" if splits.skipped else ""))
    for warning in splits.warnings:
        report(f"warning: {warning}")
    self_training = None
    if cfg.self_train.teacher:  # the main process scores (and caches); the others read its cache
        with cl.main_first():
            splits, self_training = self_train(cfg, splits, report, progress and cl.main)
        seed_everything(cfg.train.seed)  # the head starts from the seed alone, whatever the teacher's passes drew
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
    return Prepared(cfg, splits, resolved, tokenizer, model, encoded, cl, self_training)


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
    run, p, names = _start(cfg, Path(run_dir), resume, overwrite, report, cl, progress)
    model, pad_id, dev = p.model, p.tokenizer.pad_token_id, device()
    precision = pick_precision(cfg.train.precision, dev)  # training (and validation) autocast
    eval_precision = pick_precision(cfg.train.eval_precision, dev)  # baseline and test: what predict uses
    state, checkpoint = _resume(run, model, resume, report, cl)
    phases = cfg.phases()
    method(phases[state.phase].method).apply(model, cfg.method)
    features, features_phase = phase_features(p, cfg, phases[state.phase], progress), state.phase
    found = cache_costs(features, {})
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
                cache_costs(features, found)
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
    _refuse_one_class(p, run.path, state, ensemble)
    test_metrics, test_scores, test_seconds = None, None, None
    if cfg.train.evaluate_test:  # off: the test set is never scored (search trials choose on validation only)
        test_metrics, test_scores, test_seconds = _score_test(p, eval_precision, progress, features, member, ensemble)
        run.log({"event": "final", "split": "test", **test_metrics})
    method(phases[-1].method).apply(model, cfg.method)
    metrics = _metrics(p, state, params, test_metrics, test_seconds, ensemble, precision, eval_precision, features,
                       time.perf_counter() - started, sum(found.values()))
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


class OneClassModel(RunError):
    """The kept model answers one class for every validation review: a failure to report, not a result."""


def _refuse_one_class(p: Prepared, where: Path, state: State, ensemble: dict[str, Any] | None) -> None:
    """Training that ends in a model answering one class for every review (too few steps, too high a learning
    rate, too few labels) scores the class balance: report it as the failure it is, before the test pass."""
    present = {e.label for e in p.splits.validation}
    if not p.cfg.train.refuse_one_class or len(present) < 2 or not state.history:
        return
    kept = ensemble["validation"]["ensemble"] if ensemble else min(state.history, key=lambda r: r["loss"])
    if len(kept.get("answered", present)) != 1:
        return
    label = p.cfg.data.labels[kept["answered"][0]]
    raise OneClassModel(f"{where}: the kept model answers {label!r} for every validation review (accuracy "
                        f"{kept['accuracy']:.3f}): it learned nothing that tells the classes apart; train longer "
                        "(--epochs or train.min_steps), with another --lr, or with more labels")


def _start(cfg: ExperimentConfig, run_dir: Path, resume: bool, overwrite: bool, report: Report,
           cl: Cluster, progress: bool) -> tuple[RunDir, Prepared, list[str]]:
    """The run directory, everything before the first step and the names of the parameters any phase trains,
    every check made before the directory is written (a method's own, such as partial's freeze depth, too): a
    failed start leaves nothing behind (only the main process writes; the others follow)."""
    run: RunDir = FollowerRun(run_dir)
    if cl.main and resume:
        run = RunDir.create(run_dir, cfg, resume=True)
    elif cl.main:
        RunDir(run_dir).check_free(overwrite)
    p = prepare(cfg, report, cl, progress)
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
             eval_precision: torch.dtype | None, features: dict[str, Features] | None, wall: float,
             found: float = 0.0) -> dict[str, Any]:
    """metrics.json: test and baseline metrics, the validation history, parameters, data, precisions, timings.

    cost_seconds (written when it differs from the wall time): what the run takes from nothing, counting the
    feature caches it found built (`found`) and its teacher's cached scores at what computing them took."""
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
    if found:
        metrics["feature_cache_found_seconds"] = round(found, 2)
    if ensemble is not None:
        metrics["ensemble"] = ensemble
    cost, counted = wall + found, bool(found)
    if p.self_training is not None:  # scores found in the teacher's cache cost what they cost when scored
        metrics["self_training"] = st = p.self_training
        if st["teacher_cost_seconds"] is not None:
            cost, counted = cost + st["teacher_cost_seconds"] - st["scoring_seconds"], True
    if counted:
        metrics["cost_seconds"] = round(cost, 2)
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


