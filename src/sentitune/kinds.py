"""The kinds of run, and what each one can do: the one place that says so.

A kind groups the methods that share a recipe. `classifier`: a transformer classifier that the training loop
trains (probe, partial, full, lora, two-phase, contrastive). `zero-shot`: a causal LM's label-word likelihoods, nothing
trains. `tfidf`: n-grams and a logistic regression, no transformer at all. Modules never compare
`method.name` with a kind's methods: they ask `kind_of(cfg)` what the run can do (its `trains` flag, its
`reads_tokens` flag...), and `recipes.py` holds how each kind trains, evaluates and predicts. A new kind of run
is one `Kind` here and one `Recipe` there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PHASE_METHODS = ("probe", "partial", "full", "lora")  # one class each in models/methods.py


@dataclass(frozen=True)
class Kind:
    name: str
    methods: tuple[str, ...]  # the method.name values of this kind
    # The training loop (training.py) trains a transformer classifier: checkpoints and --resume, data-parallel
    # processes, windows of a long review, an n-gram ensemble beside it, search trials, train.evaluate_test off,
    # export to a plain transformers folder or an ONNX graph.
    trains: bool
    reads_tokens: bool  # a transformer's tokenizer reads the text: the run has a base model and data.max_length
    data_parallel: bool = False  # `accelerate launch` / torchrun may start it on several processes
    exports: bool = False  # `sentitune export` writes it as a plain transformers folder or an ONNX graph
    reference: bool = False  # the classical reference a bench compares every other row with (McNemar)


CLASSIFIER = Kind("classifier", (*PHASE_METHODS, "two-phase", "contrastive"), trains=True, reads_tokens=True,
                  data_parallel=True, exports=True)
ZERO_SHOT = Kind("zero-shot", ("zero-shot",), trains=False, reads_tokens=True)
TFIDF = Kind("tfidf", ("tfidf",), trains=False, reads_tokens=False, reference=True)
KINDS = (CLASSIFIER, ZERO_SHOT, TFIDF)
METHODS = tuple(m for k in KINDS for m in k.methods)


def kind_of(run: Any) -> Kind:
    """The kind of a run: of its config (an ExperimentConfig), or of a method name."""
    method = run if isinstance(run, str) else run.method.name
    for kind in KINDS:
        if method in kind.methods:
            return kind
    raise ValueError(f"method.name: {method!r} is not one of {', '.join(METHODS)}")
