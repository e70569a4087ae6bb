"""`sentitune train` and `sentitune zero-shot`: a config from the flags, any kind of run (the recipe registry
runs it), its summary printed."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from sentitune.cli.parser import TRAIN_FLAGS, ZERO_SHOT_FLAGS


def _flag_overrides(args: argparse.Namespace, flags: list[tuple[str, str, type, str]]) -> list[str]:
    """`key=value` overrides for the flags given (argparse stores each under its config key)."""
    # Strings are JSON-quoted: --model yes or --data "a #1.tar.gz" must not be read as YAML (bool, comment).
    return [f"{key}={json.dumps(value) if isinstance(value, str) else value}" for _, key, _, _ in flags
            if (value := getattr(args, key)) is not None]


def train_config(args: argparse.Namespace) -> Any:
    from sentitune.data.sources import load_experiment

    overrides = _flag_overrides(args, TRAIN_FLAGS)
    if getattr(args, "feature_cache", False):
        overrides.append("train.feature_cache=true")
    if getattr(args, "ngram_ensemble", False):
        overrides.append("ensemble.ngram=true")
    return load_experiment(args.config, overrides + args.overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from sentitune.config import dump_yaml

    cfg = train_config(args)
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    return _run(cfg, Path(args.out or Path("runs") / cfg.name), args)


def _run(cfg: Any, out: Path, args: argparse.Namespace) -> int:
    """Any kind of run (the recipe registry knows how), then its summary, printed by the main process."""
    from sentitune.errors import writing
    from sentitune.paths import ensure_writable_dir
    from sentitune.recipes import recipe_of, run_recipe

    ensure_writable_dir(out)  # before minutes of data and model loading, not after
    recipe = recipe_of(cfg)
    # A full disk once the run's config.yaml is written: a trained run continues with --resume.
    with writing(out, resumable=lambda: recipe.kind.trains and (out / "config.yaml").is_file()):
        result = run_recipe(cfg, out, getattr(args, "resume", False), args.overwrite, not args.no_progress,
                            lambda s: print(s, flush=True))
    if int(os.environ.get("RANK", "0")):  # one of several processes (accelerate launch): the main one prints
        return 0
    print(recipe.summary(cfg, result, out))
    return 0


def cmd_zero_shot(args: argparse.Namespace) -> int:
    from sentitune.data.sources import load_experiment

    overrides = ["method.name=zero-shot", *_flag_overrides(args, ZERO_SHOT_FLAGS)]
    cfg = load_experiment(args.config, overrides + args.overrides)
    return _run(cfg, Path(args.out or Path("runs") / cfg.name), args)
