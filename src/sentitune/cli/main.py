"""`main`: parse, run one command, and turn what went wrong into one line and an exit code."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from sentitune.cli.parser import build_parser
from sentitune.cli.runsets import cmd_bench, cmd_report, cmd_search
from sentitune.cli.train import cmd_train, cmd_zero_shot, train_config
from sentitune.cli.use import cmd_evaluate, cmd_export, cmd_models, cmd_predict, cmd_serve

COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "export": cmd_export,
            "serve": cmd_serve, "models": cmd_models, "zero-shot": cmd_zero_shot, "bench": cmd_bench,
            "report": cmd_report, "search": cmd_search}


def _check_launch(args: argparse.Namespace) -> None:
    """Under `accelerate launch` / torchrun every process runs this command: only training is data parallel;
    anything else would run N times over the same files."""
    from sentitune.distributed import DistributedError, launched

    if not launched():
        return
    if args.command != "train":
        raise DistributedError(f"`sentitune {args.command}` runs in one process: start it without accelerate launch "
                               "or torchrun (only `sentitune train` trains data parallel)")
    from sentitune.kinds import kind_of

    cfg = train_config(args)
    if not kind_of(cfg).data_parallel:
        raise DistributedError(f"method.name={cfg.method.name} trains no network: run it in one process, without "
                               "accelerate launch or torchrun")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; `predict`'s reviews may stand anywhere among its flags (`predict RUN --json "text"`):
    argparse alone takes positionals only before the first flag. After `--`, every word is a review."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "predict":
        texts, unknown, after_dashes = [], [], False
        for word in extra:
            if word == "--" and not after_dashes:
                after_dashes = True
            else:
                (texts if after_dashes or not word.startswith("-") else unknown).append(word)
        args.texts, extra = [*args.texts, *texts], unknown
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
    # PEFT reads a property transformers 5 deprecated: two stderr lines on every LoRA load, nothing to act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # weight-loading bars; our own bars show the long work
    import torch

    from sentitune.errors import SentituneError, disk_message, os_failure
    from sentitune.training import Interrupted

    try:
        _check_launch(args)
        return COMMANDS[args.command](args)
    except SentituneError as e:
        print(f"sentitune: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"sentitune: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("sentitune: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"sentitune: error: out of memory during `sentitune {args.command}`; free memory or work on less "
              "at once (smaller batch size, max length or input)", file=sys.stderr)
        return 2
    except Exception as e:
        if isinstance(e, torch.OutOfMemoryError):  # a GPU's (a RuntimeError): the traceback says nothing more
            print(f"sentitune: error: out of GPU memory during `sentitune {args.command}`; lower "
                  "train.batch_size / train.eval_batch_size or data.max_length, or use train.grad_accum",
                  file=sys.stderr)
            return 2
        found = os_failure(e)  # one outside any `writing(path)`: the file if the error names one
        if found is None:
            raise  # a bug: the traceback is what a bug report needs
        print(f"sentitune: error: {disk_message(*found)}", file=sys.stderr)
        return 2

