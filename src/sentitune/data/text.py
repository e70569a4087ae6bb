"""Text cleaning and token-level truncation.

Truncation works on token ids, not characters, so "tail" really keeps the last `max_length`
tokens (long reviews often put the verdict at the end).
"""

from __future__ import annotations

import re

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SPACES = re.compile(r"[ \t]{2,}")


def clean_text(text: str) -> str:
    """Replace IMDb's HTML line breaks with spaces and squeeze the runs of spaces they leave."""
    return _SPACES.sub(" ", _BR.sub(" ", text)).strip()


def truncate_ids(ids: list[int], budget: int, side: str = "head", head_tokens: int | None = None) -> list[int]:
    """Keep at most `budget` ids: the first ones (head), the last (tail) or both ends (head+tail).

    head+tail keeps `head_tokens` from the start (default a quarter of the budget) and the rest
    from the end, as in Sun et al. 2019 ("How to fine-tune BERT for text classification").
    """
    if budget <= 0:
        return []
    if len(ids) <= budget:
        return list(ids)
    if side == "head":
        return list(ids[:budget])
    if side == "tail":
        return list(ids[len(ids) - budget :])
    if side == "head+tail":
        head = budget // 4 if head_tokens is None else min(head_tokens, budget)
        tail = budget - head
        return list(ids[:head]) + (list(ids[len(ids) - tail :]) if tail else [])
    raise ValueError(f"truncation side {side!r} is not one of head, tail, head+tail")
