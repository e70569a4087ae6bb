"""Hyper-parameter search: Optuna trials chosen on validation, then one run of the best on test.

Why this shape: every trial is an ordinary run directory (its config built with `load_config`, so
every value is validated as usual) trained with the test pass and the baseline off, so the choice
never sees test; only the best configuration is trained once more with the test pass on. The
study lives in an Optuna storage (an SQLite file under --out by default), so a search stopped
anywhere continues: finished trials stay finished, a trial killed mid-run is redone from its
checkpoint (its directory is named by a hash of its settings), and `--trials` can grow it later.

Many workers (the same command, started anywhere against one storage URL: SQLite on one machine,
PostgreSQL across several) share one study: the decision to start a trial, and its ask, happen under a
lock in the claims table of that same database, so together they run `--trials` and no more; each trial
is sampled with a seed of its own number; a trial directory (equal settings, equal folder) and `best/`
are claimed, so two workers never train into one folder at once. A trial whose worker died is failed by
Optuna's heartbeat after the grace period (at once when that worker was a process of this machine) and
its settings queued again.

    name: minilm-lora-lr
    base: ../experiments/minilm-lora-quickstart.yaml   # optional, relative to this file
    set: [data.train_size=2000]                         # the trials and the final run
    trial_set: [data.train_size=500]                    # optional: the trials only (a cheaper budget)
    search:
      trials: 20
      metric: loss       # loss (minimised) | accuracy | macro_f1 | roc_auc (maximised), read from the
                         # validation record whose weights the run keeps (its lowest validation loss);
                         # macro_f1: the mean of the classes' F1, what an unbalanced N-class task is read by
      seed: 0            # TPE sampler seed
      storage: null      # an Optuna storage URL; default sqlite:///<out>/study.db
      space:
        train.lr: {low: 1.0e-5, high: 1.0e-3, log: true}   # float
        train.epochs: {low: 1, high: 3, step: 1}           # int: low, high (and step) are integers
        method.lora.r: [4, 8, 16, 32]                      # categorical
"""

from sentitune.search.space import Search, SearchError, load_search, trial_dir_name, trial_overrides
from sentitune.search.study import FinalOutcome, TrialOutcome, objective, run_search
from sentitune.search.summary import markdown

__all__ = ["FinalOutcome", "Search", "SearchError", "TrialOutcome", "load_search", "markdown", "objective",
           "run_search", "trial_dir_name", "trial_overrides"]
