"""Put a benchmark's table into a doc between `<!-- NAME:start -->` and `<!-- NAME:end -->` markers.

One function for every benchmark script (they are run as `python benchmarks/X.py`, so this folder
is on sys.path), written atomically: a kill mid-write never leaves a doc cut in half.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sentitune.atomic import write_text


def write_block(doc: Path, name: str, body: str, new_doc: str = "", require: bool = False) -> None:
    """Replace what lies between the NAME markers in `doc` with `body` (which ends with a newline).

    Without the markers the block is appended (to `new_doc` if `doc` does not exist yet), unless
    `require`: then it is an error, for docs whose table has a fixed place that must not move.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = doc.read_text(encoding="utf-8") if doc.exists() else new_doc
    block = f"{start}\n{body}{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    elif require:
        raise SystemExit(f"{doc}: no {start} marker to write the table into")
    else:
        text = text.rstrip() + f"\n\n{block}\n"
    write_text(doc, text)


def command_block(command: str, text: str) -> str:
    """A block's body: the command that made it (fenced, so it can be copied) and then its output."""
    return f"```\n{command}\n```\n\n{text.rstrip(chr(10))}\n"


def publish(text: str, doc: Path, name: str | None) -> None:
    """Print a benchmark's output and, given a block NAME, write it into `doc` under the command that made it."""
    print(text)
    if name:
        command = f"python benchmarks/{Path(sys.argv[0]).name} " + " ".join(sys.argv[1:])
        write_block(doc, name, command_block(command, text))
