"""The `sentitune` command: parse arguments, call one library function, print, choose the exit code.

Library code never prints; errors it raises carry a one-line message that names the problem and
where, and are printed here without a traceback (exit 2). Ctrl-C during training exits 130 after
saving a checkpoint.

Exit codes: 0 done; 2 an error the user can act on, printed as one line `sentitune: error: ...` (bad
arguments or input, a damaged run, a folder that cannot be written, a full disk, out of memory);
130 interrupted; 1 for a bug (a Python traceback), when `bench` finished with a failed row, or when
`search` could not train its best trial.

The package: `parser.py` (the grammar and --help), `train.py` (train, zero-shot), `use.py` (evaluate, predict,
export, serve, models), `runsets.py` (bench, report, search), `main.py` (main, errors, exit codes).
"""

from sentitune.cli.main import main, parse
from sentitune.cli.parser import build_parser

__all__ = ["build_parser", "main", "parse"]
