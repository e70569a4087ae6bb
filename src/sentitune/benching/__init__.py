"""A benchmark: a matrix of ordinary runs from one YAML file, and results read back from their run directories.

Why runs and not a new format: every row is an ordinary experiment config (built with `load_config`, so each
override is validated as usual) in an ordinary run directory; a finished row is skipped and a checkpointed
one resumed, so a bench interrupted anywhere continues where it stopped. The results tables are generated
from the run directories only (metrics.json, config.yaml, predictions.csv): no number is ever typed.

    name: minilm-vs-tfidf
    base: ../experiments/minilm-lora-quickstart.yaml   # optional, relative to this file
    set: [data.eval_size=2000]                          # optional, for every row
    matrix:                                             # rows: the cartesian product, in file order
      method.name: [lora, probe]
      train.seed: [1, 2]
    rows:                                               # optional extra rows
      - {name: tfidf, set: [method.name=tfidf]}
      - {name: zero-shot, config: zero-shot-smollm2.yaml, set: [data.eval_size=1000]}  # its own base config
      - {name: bert, config: bert.yaml, published: {accuracy: 0.9346, source: "Sanh et al. 2019, Table 2"}}

`published` puts a number from the literature beside a row that reproduces its setup (never used in a test).

Many workers (the same command, the same --out, on one machine or several sharing the folder) split one bench:
a worker claims a row in a claims table (`--workers-db`, default sqlite:///OUT/claims.db; PostgreSQL across
machines) before it trains it, skips rows other live workers hold, takes over a row whose worker stopped
beating for the grace period (at once when that worker was a process of this machine), and rewrites the
results files, under a lock, whenever it finishes a row.

Rows may have any number of classes (data.labels): accuracy, its bootstrap CI and McNemar use each test
example's decision (the `pred` of predictions.csv, the most probable class), macro-F1 is in every row, and
a bench with more than two classes also gets each class's F1.
"""

from sentitune.benching.results import (
           RESULT_COLUMNS,
           SEED_METRICS,
           class_cell,
           class_heads,
           collect,
           markdown,
           write_results,
)
from sentitune.benching.rows import Bench, BenchError, BenchRow, load_bench
from sentitune.benching.run import Outcome, run_bench

__all__ = ["RESULT_COLUMNS", "SEED_METRICS", "Bench", "BenchError", "BenchRow", "Outcome", "class_cell",
           "class_heads", "collect", "load_bench", "markdown", "run_bench", "write_results"]
