"""Prompts as token ids: a template around a (cut) review, optionally after few-shot demonstrations."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sentitune.config import ConfigError, PromptTemplate
from sentitune.data.records import Example
from sentitune.data.text import truncate_ids
from sentitune.errors import ModelError
from sentitune.zero_shot.templates import TEXT_SLOT

_SENTINEL = "\u2063SENTITUNE_TEXT\u2063"  # stands in for the review while a chat template renders


@dataclass(frozen=True)
class Demonstration:
    """A labelled training review shown, with its label word, before the review to classify."""

    text: str
    label: int


class PromptEncoder:
    """Turns a review into prompt ids: prefix + truncated review + suffix.

    The pieces are tokenized separately and concatenated, so the instruction and the suffix always
    survive whole (only the review is cut) and the ids the model sees are exactly the reported ones.
    """

    def __init__(self, tokenizer: Any, template: PromptTemplate, review_tokens: int, truncation: str = "tail",
                 demonstrations: Sequence[Demonstration] = (), shot_tokens: int = 60) -> None:
        if template.prompt.count(TEXT_SLOT) != 1:
            raise ConfigError(f"template {template.name!r}: the prompt needs exactly one {TEXT_SLOT} slot")
        self.tokenizer = tokenizer
        self.template = template
        self.review_tokens = review_tokens
        self.truncation = truncation
        self.label_ids = [self._word_ids(template.negative, "negative"), self._word_ids(template.positive, "positive")]
        demo_text = "".join(self._demonstration(d, shot_tokens) for d in demonstrations)
        content = demo_text + template.prompt
        if template.chat:
            if not getattr(tokenizer, "chat_template", None):
                raise ModelError(f"template {template.name!r} needs a chat template; this tokenizer has none")
            message = {"role": "user", "content": content.replace(TEXT_SLOT, _SENTINEL)}
            rendered = tokenizer.apply_chat_template([message], add_generation_prompt=True, tokenize=False)
            if rendered.count(_SENTINEL) != 1:
                raise ModelError(f"template {template.name!r}: the chat template did not keep the review slot")
            prefix, suffix = rendered.split(_SENTINEL)
        else:
            prefix, suffix = content.split(TEXT_SLOT)
        # Spaces before the slot belong to the review's first token (" Great", not " " + "Great").
        stripped = prefix.rstrip(" ")
        self.lead = prefix[len(stripped):]
        self.prefix_ids = self._bos() + self._ids(stripped)
        self.suffix_ids = self._ids(suffix)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def _bos(self) -> list[int]:
        """The BOS token, for tokenizers that add one (Llama-2 style); chat templates write their own."""
        bos = self.tokenizer.bos_token_id
        if self.template.chat or bos is None:
            return []
        ids = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        return [bos] if ids and ids[0] == bos else []

    def _word_ids(self, word: str, which: str) -> list[int]:
        ids = self._ids(word)
        if not ids:
            raise ConfigError(f"template {self.template.name!r}: the {which} label word is empty")
        return ids

    def _demonstration(self, demo: Demonstration, shot_tokens: int) -> str:
        """A demonstration is the template filled with a (cut) training review and its label word."""
        ids = truncate_ids(self._ids(demo.text), shot_tokens, self.truncation)
        text = self.tokenizer.decode(ids).strip()
        word = self.template.positive if demo.label == 1 else self.template.negative
        return self.template.prompt.replace(TEXT_SLOT, text) + word + "\n\n"

    def encode(self, text: str) -> list[int]:
        review = truncate_ids(self._ids(self.lead + text), self.review_tokens, self.truncation)
        return self.prefix_ids + review + self.suffix_ids

    def describe_label_words(self) -> dict[str, dict[str, Any]]:
        """How each label word tokenizes: the answer to "why is ' Positive' not 'Positive'"."""
        out = {}
        for name, word, ids in (("positive", self.template.positive, self.label_ids[1]),
                                ("negative", self.template.negative, self.label_ids[0])):
            out[name] = {"word": word, "ids": ids, "tokens": [self.tokenizer.decode([i]) for i in ids]}
        return out


def draw_demonstrations(pool: Sequence[Example], k: int, seed: int) -> list[Demonstration]:
    """k demonstrations, balanced between the labels (the odd one out at random), seeded, shuffled."""
    if k == 0:
        return []
    rng = random.Random(seed)
    by_label = {lab: [e for e in pool if e.label == lab] for lab in (0, 1)}
    counts = {0: k // 2, 1: k // 2}
    if k % 2:
        counts[rng.choice((0, 1))] += 1
    if any(len(by_label[lab]) < counts[lab] for lab in (0, 1)):
        raise ConfigError(f"zero_shot.shots={k}: the training pool has too few reviews of one label")
    chosen = [e for lab in (0, 1) for e in rng.sample(by_label[lab], counts[lab])]
    rng.shuffle(chosen)
    return [Demonstration(e.text, e.label) for e in chosen]


def describe_prompts(encoders: Sequence[PromptEncoder]) -> tuple[dict[str, dict[str, Any]], str]:
    """Label-word tokenization (keys prefixed by the member's name in an ensemble) and the prompt text."""
    words: dict[str, dict[str, Any]] = {}
    examples = []
    for e in encoders:
        lead = "" if len(encoders) == 1 else f"{e.template.name} "
        words.update({lead + k: v for k, v in e.describe_label_words().items()})
        tok = e.tokenizer
        examples.append(tok.decode(e.prefix_ids) + e.lead + "<review>" + tok.decode(e.suffix_ids))
    return words, "\n----\n".join(examples)
