"""Zero- and few-shot sentiment with a causal LM: compare the likelihood of the label words.

For a prompt such as ``Review: {text}\\nSentiment:`` the score of a review is the log-likelihood
margin ``log p(positive words | prompt) - log p(negative words | prompt)``. The margin is a score like
any classifier's, so ROC AUC and the other metrics come from the same `classification_metrics`; the
raw decision (margin > 0) is reported beside three calibrated ones (docs/ZERO_SHOT.md). With one label
word per class (K > 2, e.g. negative / neutral / positive toward a {target}) the score is the row of
class log-probabilities, and a decision is a bias per class.

One module per step, each importing only the ones before it:
`templates` (built-in prompts, names) -> `prompts` (prompt token ids, demonstrations) -> `scoring`
(the causal LM's label-word log-likelihoods) -> `calibration` (thresholds, ensembles) -> `predictor`
(a saved run's `zero_shot.json`) -> `recipe` (`run_zero_shot`, the prompt sweep).
This module re-exports what the rest of sentitune, the benchmark and the tests use.
"""

from sentitune.zero_shot.calibration import (
    Calibration,
    calibrate,
    calibrated_rows,
    calibration_thresholds,
    combine_margins,
    contextual_bias,
    contextual_offset,
    decision_metrics,
    fit_bias,
    fit_threshold,
    label_free_threshold,
    member_scales,
    probabilities,
)
from sentitune.zero_shot.predictor import SavedPrompt, saved_margins
from sentitune.zero_shot.prompts import Demonstration, PromptEncoder, describe_prompts, draw_demonstrations
from sentitune.zero_shot.recipe import run_zero_shot, sweep_row
from sentitune.zero_shot.scoring import CausalScorer, load_causal_lm
from sentitune.zero_shot.templates import BUILTIN_TEMPLATES, check_templates, get_template, get_templates

__all__ = [
    "BUILTIN_TEMPLATES",
    "Calibration",
    "CausalScorer",
    "Demonstration",
    "PromptEncoder",
    "SavedPrompt",
    "calibrate",
    "calibrated_rows",
    "calibration_thresholds",
    "check_templates",
    "combine_margins",
    "contextual_bias",
    "contextual_offset",
    "decision_metrics",
    "describe_prompts",
    "draw_demonstrations",
    "fit_bias",
    "fit_threshold",
    "get_template",
    "get_templates",
    "label_free_threshold",
    "load_causal_lm",
    "member_scales",
    "probabilities",
    "run_zero_shot",
    "saved_margins",
    "sweep_row",
]
