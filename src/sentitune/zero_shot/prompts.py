"""Prompts as token ids: a template around a (cut) review (and its target, for target-dependent examples),
optionally after few-shot demonstrations."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sentitune.config import BINARY_LABELS, ConfigError, PromptTemplate
from sentitune.data.records import Example
from sentitune.data.text import truncate_ids
from sentitune.errors import DataError, ModelError
from sentitune.zero_shot.templates import TARGET_SLOT, TEXT_SLOT, check_label_words, has_target_slot, label_words

_SENTINEL = "\u2063SENTITUNE_TEXT\u2063"  # stands in for the review while a chat template renders


@dataclass(frozen=True)
class Demonstration:
    """A labelled training review shown, with its label word, before the review to classify."""

    text: str
    label: int
    target: str | None = None


class PromptEncoder:
    """Turns a review into prompt ids: prefix + truncated review + suffix.

    The pieces are tokenized separately and concatenated, so the instruction and the suffix always
    survive whole (only the review is cut) and the ids the model sees are exactly the reported ones.
    A {target} slot is filled in the prefix or suffix, so the target is never cut either.

    `classes` names the label words' classes (data.labels; default: negative, positive for two words).
    """

    def __init__(self, tokenizer: Any, template: PromptTemplate, review_tokens: int, truncation: str = "tail",
                 demonstrations: Sequence[Demonstration] = (), shot_tokens: int = 60,
                 classes: Sequence[str] | None = None) -> None:
        if template.prompt.count(TEXT_SLOT) != 1:
            raise ConfigError(f"template {template.name!r}: the prompt needs exactly one {TEXT_SLOT} slot")
        self.tokenizer = tokenizer
        self.template = template
        self.review_tokens = review_tokens
        self.truncation = truncation
        self.targeted = has_target_slot(template)
        self.words = label_words(template)
        if classes is not None:
            check_label_words(template, classes)
        self.classes = list(classes) if classes is not None else _default_classes(len(self.words))
        self.label_ids = [self._word_ids(w, c) for w, c in zip(self.words, self.classes, strict=True)]
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
        self._prefix, self._suffix = stripped, suffix
        # With a {target} slot these are the template's ids around the review, the slot unfilled (for the record).
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

    def frame(self, target: str | None) -> tuple[list[int], list[int]]:
        """The prefix and suffix ids around the review, the target (if the template has a slot) filled in."""
        if not self.targeted:
            if target is not None:
                raise DataError(f"template {self.template.name!r} has no {TARGET_SLOT} slot for the target "
                                f"{target!r}: use a target template (e.g. target-sentiment)")
            return self.prefix_ids, self.suffix_ids
        if target is None:
            raise DataError(f"template {self.template.name!r} needs a target for its {TARGET_SLOT} slot; "
                            "this example has none")
        return (self._bos() + self._ids(self._prefix.replace(TARGET_SLOT, target)),
                self._ids(self._suffix.replace(TARGET_SLOT, target)))

    def _word_ids(self, word: str, which: str) -> list[int]:
        ids = self._ids(word)
        if not ids:
            raise ConfigError(f"template {self.template.name!r}: the {which} label word is empty")
        return ids

    def _demonstration(self, demo: Demonstration, shot_tokens: int) -> str:
        """A demonstration is the template filled with a (cut) training review and its label word."""
        ids = truncate_ids(self._ids(demo.text), shot_tokens, self.truncation)
        text = self.tokenizer.decode(ids).strip()
        prompt = self.template.prompt
        if self.targeted:
            if demo.target is None:
                raise DataError(f"template {self.template.name!r}: a demonstration has no target")
            prompt = prompt.replace(TARGET_SLOT, demo.target)
        return prompt.replace(TEXT_SLOT, text) + self.words[demo.label] + "\n\n"

    def encode(self, text: str, target: str | None = None) -> list[int]:
        prefix, suffix = self.frame(target)
        review = truncate_ids(self._ids(self.lead + text), self.review_tokens, self.truncation)
        return prefix + review + suffix

    def describe_label_words(self) -> dict[str, dict[str, Any]]:
        """How each label word tokenizes: the answer to "why is ' Positive' not 'Positive'"."""
        order = [1, 0] if len(self.words) == 2 else range(len(self.words))  # binary: positive first, as ever
        return {self.classes[i]: {"word": self.words[i], "ids": self.label_ids[i],
                                  "tokens": [self.tokenizer.decode([t]) for t in self.label_ids[i]]} for i in order}


def _default_classes(n: int) -> list[str]:
    return list(BINARY_LABELS) if n == 2 else [f"class_{i}" for i in range(n)]


def draw_demonstrations(pool: Sequence[Example], k: int, seed: int, classes: int = 2) -> list[Demonstration]:
    """k demonstrations, balanced between the classes (the remainder to classes drawn at random), seeded,
    shuffled."""
    if k == 0:
        return []
    rng = random.Random(seed)
    labels = range(classes)
    by_label = {lab: [e for e in pool if e.label == lab] for lab in labels}
    counts = {lab: k // classes for lab in labels}
    for lab in rng.sample(labels, k % classes):  # two classes: draws as rng.choice((0, 1)) did
        counts[lab] += 1
    if any(len(by_label[lab]) < counts[lab] for lab in labels):
        raise ConfigError(f"zero_shot.shots={k}: the training pool has too few reviews of one label")
    chosen = [e for lab in labels for e in rng.sample(by_label[lab], counts[lab])]
    rng.shuffle(chosen)
    return [Demonstration(e.text, e.label, e.target) for e in chosen]


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
