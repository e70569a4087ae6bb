"""`main`: parse, run one command, and turn what went wrong into one line and an exit code."""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from sentitune.cli.parser import build_parser
from sentitune.cli.runsets import cmd_bench, cmd_report, cmd_search
from sentitune.cli.train import cmd_train, cmd_zero_shot, train_config
from sentitune.cli.use import cmd_evaluate, cmd_export, cmd_models, cmd_predict, cmd_serve

# OS errors that reach main (a full disk, a folder that turned read-only mid-run) -> what the user reads.
_OS_ERRORS = {errno.ENOSPC: "no space left on device (disk full)", errno.EDQUOT: "disk quota exceeded",
              errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
              errno.EPERM: "operation not permitted"}


def _os_error(error: BaseException) -> tuple[int, str | None] | None:
    """(errno, file) of an OS failure behind `error`, from its chain; None when it is something else.

    Besides OSError: the tokenizers and safetensors writers raise a bare Exception whose message ends in
    "(os error 28)" when the disk fills while a model is saved.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _OS_ERRORS:
            return current.errno, None if current.filename is None else str(current.filename)
        found = re.search(r"\(os error (\d+)\)", str(current))
        if found and int(found.group(1)) in _OS_ERRORS:
            return int(found.group(1)), None
        current = current.__cause__ or current.__context__
    return None


def _os_message(args: argparse.Namespace, code: int, filename: str | None) -> str:
    """One line naming the file (the real name, not the temporary `.NAME.XXXXXXXX.tmp` of an atomic write)."""
    if filename:
        where: Any = Path(*[m.group(1) if (m := re.fullmatch(r"\.(.+)\.[A-Za-z0-9_]+\.tmp", part)) else part
                            for part in Path(filename).parts])
    else:
        where = getattr(args, "target", None)  # the output the command was writing
    text = f"{where}: {_OS_ERRORS[code]}" if where else _OS_ERRORS[code]
    if code in (errno.ENOSPC, errno.EDQUOT):
        # --resume needs the run's config.yaml: a disk that filled before it was written means start again.
        resumable = getattr(args, "resumable", False) and (Path(args.target) / "config.yaml").is_file()
        text += ("; the run can continue with --resume once space is freed" if resumable
                 else "; free some space and run the command again")
    return text


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
    if not kind_of(cfg).trains:
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

    from sentitune.errors import SentituneError
    from sentitune.train import Interrupted

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
        found = _os_error(e)
        if found is None:
            raise  # a bug: the traceback is what a bug report needs
        print(f"sentitune: error: {_os_message(args, *found)}", file=sys.stderr)
        return 2

