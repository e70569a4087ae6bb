"""Target-dependent sentiment: the three-line `$T$` files and where a target sits in its sentence.

The format of Dong et al. 2014 (acl-14 Twitter) and of the SemEval-2014 restaurant and laptop sets
as most aspect-sentiment code distributes them: per instance a sentence with the target replaced by
`$T$` (acl-14: at times twice), the target, and a polarity (-1 negative, 0 neutral, 1 positive). The
sentence is rebuilt with the target put back, and the first slot's character offsets kept, so every way
of showing the target to a model (sentence pair, inline markers, prompt) starts from the same `Example`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sentitune.data.records import Example
from sentitune.errors import DataError

SLOT = "$T$"
POLARITY_NAMES = {"-1": "negative", "0": "neutral", "1": "positive"}


def label_index(value: str, labels: list[str], where: str) -> int:
    """A polarity (-1/0/1) or a class name, as its index in `labels`."""
    name = POLARITY_NAMES.get(value.strip(), value.strip()).lower()
    lowered = [x.lower() for x in labels]
    if name not in lowered:
        raise DataError(f"{where}: label {value.strip()!r} is not one of -1, 0, 1 or "
                        f"{', '.join(labels)} (data.labels)")
    return lowered.index(name)


def read_target_lines(path: Path, labels: list[str]) -> list[Example]:
    """Every instance of a three-line `$T$` file, or a one-line error naming the file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    examples = []
    for start in range(0, len(lines), 3):
        line_no = start + 1
        where = f"{path}:{line_no}"
        if start + 3 > len(lines):
            missing = ("target", "label")[len(lines) - start - 1:]
            raise DataError(f"{where}: instance has {len(lines) - start} of its 3 lines (no {' or '.join(missing)} "
                            "line): sentence with $T$, target, label")
        sentence, target, raw_label = lines[start], lines[start + 1].strip(), lines[start + 2]
        if SLOT not in sentence:  # acl-14 tweets name their target twice at times: every slot is filled
            raise DataError(f"{where}: sentence has no {SLOT} slot (is a line missing above?)")
        if not target:
            raise DataError(f"{path}:{line_no + 1}: empty target")
        label = label_index(raw_label, labels, f"{path}:{line_no + 2}")
        at = sentence.index(SLOT)
        text = sentence.replace(SLOT, target)
        examples.append(Example(id=f"{path.name}:{line_no}", text=text.strip(), label=label, target=target,
                                span=_strip_shift(text, at, len(target))))
    if not examples:
        raise DataError(f"{path}: no instances")
    return examples


def _strip_shift(text: str, at: int, length: int) -> tuple[int, int]:
    """The span after text.strip() removed leading spaces."""
    shift = len(text) - len(text.lstrip())
    return at - shift, at - shift + length


def locate(text: str, target: str, where: str) -> tuple[int, int]:
    """The first occurrence of `target` in `text` (case-insensitive when the exact case is absent)."""
    at = text.find(target)
    if at < 0:
        at = text.lower().find(target.lower())
    if at < 0:
        raise DataError(f"{where}: target {target!r} does not occur in the text")
    return at, at + len(target)


def check_span(text: str, target: str, start: object, end: object, where: str) -> tuple[int, int]:
    """Offsets given in a file: integers inside the text whose characters are the target."""
    try:
        s, e = int(str(start)), int(str(end))
    except ValueError:
        raise DataError(f"{where}: target offsets {start!r}, {end!r} are not integers") from None
    if not 0 <= s < e <= len(text):
        raise DataError(f"{where}: target offsets {s}..{e} are outside the text ({len(text)} characters)")
    if text[s:e].lower() != target.lower():
        raise DataError(f"{where}: text[{s}:{e}] is {text[s:e]!r}, not the target {target!r}")
    return s, e


def moved_span(old_text: str, new_text: str, span: tuple[int, int],
               clean: Callable[[str], str] = lambda t: t) -> tuple[int, int] | None:
    """Where the target is after `clean` changed the text: the same occurrence (first, second...) of the
    target as cleaned (a double space inside "delete  key" is squeezed too); None when it is gone."""
    target = old_text[span[0]:span[1]]
    nth = old_text[:span[0]].count(target) if target else 0
    cleaned = clean(target)
    if not cleaned:
        return None
    at = -1
    for _ in range(nth + 1):
        at = new_text.find(cleaned, at + 1)
        if at < 0:
            return None
    return at, at + len(cleaned)
