"""Put a benchmark's table into a doc between `<!-- NAME:start -->` and `<!-- NAME:end -->` markers.

The one marker format and the one writer for every benchmark script (they are run as `python benchmarks/X.py`,
so this folder is on sys.path), written atomically: a kill mid-write never leaves a doc cut in half.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sentitune.atomic import write_text


def markers(name: str) -> tuple[str, str]:
    """The lines that open and close block NAME."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def read_block(text: str, name: str) -> str | None:
    """What lies between the NAME markers in `text` (the body `write_block` was given), None without them."""
    start, end = markers(name)
    if start not in text or end not in text:
        return None
    return text[text.index(start) + len(start):text.index(end)].removeprefix("\n")


def put_block(text: str, name: str, body: str, require: bool = False, where: object = "the doc") -> str:
    """`text` with what lies between the NAME markers replaced by `body` (which ends with a newline).

    Without the markers the block is appended, unless `require`: then it is an error (naming `where`).
    """
    start, end = markers(name)
    block = f"{start}\n{body}{end}"
    if start in text and end in text:
        return text[: text.index(start)] + block + text[text.index(end) + len(end):]
    if require:
        raise SystemExit(f"{where}: no {start} marker to write the table into")
    return text.rstrip() + f"\n\n{block}\n"


def write_block(doc: Path, name: str, body: str, new_doc: str = "", require: bool = False) -> None:
    """Replace what lies between the NAME markers in `doc` with `body` (which ends with a newline).

    Without the markers the block is appended (to `new_doc` if `doc` does not exist yet), unless
    `require`: then it is an error, for docs whose table has a fixed place that must not move.
    """
    text = doc.read_text(encoding="utf-8") if doc.exists() else new_doc
    write_text(doc, put_block(text, name, body, require, where=doc))


def home(name: str, *docs: Path) -> Path:
    """The first of `docs` that holds block NAME, else the first: where a block that may have moved (from a
    guide to its history page) is written again."""
    start, end = markers(name)
    for doc in docs:
        text = doc.read_text(encoding="utf-8") if doc.exists() else ""
        if start in text and end in text:
            return doc
    return docs[0]


def command_block(command: str, text: str) -> str:
    """A block's body: the command that made it (fenced, so it can be copied) and then its output."""
    return f"```\n{command}\n```\n\n{text.rstrip(chr(10))}\n"


def publish(text: str, doc: Path, name: str | None) -> None:
    """Print a benchmark's output and, given a block NAME, write it into `doc` under the command that made it."""
    print(text)
    if name:
        command = f"python benchmarks/{Path(sys.argv[0]).name} " + " ".join(sys.argv[1:])
        write_block(doc, name, command_block(command, text))
