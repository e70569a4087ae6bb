"""Prompt templates: the built-in ones, and finding a template (or an `a+b` ensemble) by name."""

from __future__ import annotations

from collections.abc import Sequence

from sentitune.config import ConfigError, PromptTemplate

TEXT_SLOT = "{text}"
ENSEMBLE_SEP = "+"  # zero_shot.template: "review-sentiment+chat" averages the two prompts' margins

# Built-in templates. "published" is the prompt of the GPT-2 experiment the issue cites.
BUILTIN_TEMPLATES: dict[str, PromptTemplate] = {
    t.name: t
    for t in (
        PromptTemplate("published", "Review: {text} Sentiment:", " Positive", " Negative"),
        PromptTemplate("review-sentiment", "Review: {text}\nSentiment:", " positive", " negative"),
        PromptTemplate("review-sentiment-cap", "Review: {text}\nSentiment:", " Positive", " Negative"),
        PromptTemplate("movie-was", "Review: {text}\nOverall, the movie was", " great", " terrible"),
        PromptTemplate("question", "Movie review: {text}\nQuestion: Is this review positive or negative?\nAnswer:",
                       " positive", " negative"),
        PromptTemplate("chat", "Is the sentiment of this movie review positive or negative?\n\nReview: {text}\n\n"
                       "Answer with one word.", "Positive", "Negative", chat=True),
    )
}


def get_template(name: str, custom: Sequence[PromptTemplate] = ()) -> PromptTemplate:
    """A user-defined template (by name) wins over a built-in of the same name."""
    for t in custom:
        if t.name == name:
            return t
    if name in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[name]
    known = ", ".join([*BUILTIN_TEMPLATES, *(t.name for t in custom)])
    raise ConfigError(f"zero_shot.template: unknown template {name!r} (known: {known})")


def get_templates(spec: str, custom: Sequence[PromptTemplate] = ()) -> list[PromptTemplate]:
    """`a+b` names a prompt ensemble (see `combine_margins`); a plain name is a one-member list."""
    names = [n.strip() for n in spec.split(ENSEMBLE_SEP)]
    if not all(names):
        raise ConfigError(f"zero_shot.template: {spec!r} has an empty member (write e.g. review-sentiment+chat)")
    return [get_template(n, custom) for n in names]
