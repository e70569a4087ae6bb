"""Prompt templates: the built-in ones, finding a template (or an `a+b` ensemble) by name, and checking that
a template fits the data (one label word per class; a {target} slot exactly when the examples have targets)."""

from __future__ import annotations

from collections.abc import Sequence

from sentitune.config import ConfigError, PromptTemplate

TEXT_SLOT = "{text}"
TARGET_SLOT = "{target}"  # target-dependent examples: filled with Example.target, never truncated
ENSEMBLE_SEP = "+"  # zero_shot.template: "review-sentiment+chat" averages the two prompts' margins

# Built-in templates. "published" is the prompt of the GPT-2 experiment the issue cites; the target-* ones are
# for target-dependent data labelled negative / neutral / positive (SemEval-2014, acl-14 Twitter).
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
        PromptTemplate("target-sentiment", 'Sentence: {text}\nThe sentiment toward "{target}" is',
                       words=[" negative", " neutral", " positive"]),
        PromptTemplate("target-inline", "{text} The sentiment toward {target} is",  # as data.target_prompt
                       words=[" negative", " neutral", " positive"]),
        PromptTemplate("target-chat", 'Is the sentiment toward "{target}" in this sentence negative, neutral or '
                       "positive?\n\nSentence: {text}\n\nAnswer with one word.",
                       words=["Negative", "Neutral", "Positive"], chat=True),
    )
}


def label_words(template: PromptTemplate) -> list[str]:
    """The template's label words in class order: its `words`, or (binary) negative then positive."""
    return list(template.words) if template.words else [template.negative, template.positive]


def has_target_slot(template: PromptTemplate) -> bool:
    return TARGET_SLOT in template.prompt


def check_label_words(template: PromptTemplate, labels: Sequence[str]) -> None:
    """One word per class, in data.labels order: a count that differs, or the class names themselves in
    another order, would score the wrong class silently."""
    words = label_words(template)
    if len(words) != len(labels):
        raise ConfigError(f"template {template.name!r}: {len(words)} label words {words} for {len(labels)} classes "
                          f"{list(labels)} (data.labels): give one word per class, in that order (words: [...])")
    spelled = [w.strip().lower() for w in words]
    names = [x.lower() for x in labels]
    if sorted(spelled) == sorted(names) and spelled != names:
        raise ConfigError(f"template {template.name!r}: label words {words} name the classes in another order than "
                          f"data.labels {list(labels)}; words map to classes by position")


def check_target_slot(template: PromptTemplate, targets: bool) -> None:
    """A {target} slot exactly when the examples are target-dependent: otherwise the slot would stay empty, or
    the model would not be told which target the label is about."""
    if has_target_slot(template) and not targets:
        raise ConfigError(f"template {template.name!r} has a {TARGET_SLOT} slot, but the examples have no targets "
                          "(target-dependent data: .seg/.raw files or data.target_column)")
    if targets and not has_target_slot(template):
        raise ConfigError(f"template {template.name!r} has no {TARGET_SLOT} slot, but the examples are "
                          "target-dependent: the prompt must say which target the sentiment is about "
                          "(e.g. template target-sentiment)")


def check_templates(templates: Sequence[PromptTemplate], labels: Sequence[str], targets: bool) -> None:
    """Every template against the data, before a model is loaded."""
    for t in templates:
        check_label_words(t, labels)
        check_target_slot(t, targets)


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
