#!/usr/bin/env bash
# The README's test command (after scripts/setup.sh): lint, the whole suite with train.precision=auto
# (bf16 autocast on a CPU with bf16 instructions, fp32 elsewhere), then the tests that compare numbers
# (marker `numeric`) again under the precision auto did not pick here, set by $SENTITUNE_PRECISION.
# On a CPU without bf16 that second pass runs emulated bf16 (~100x slower matmuls): tiny models only.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests benchmarks
# Debian packages the tests use: chromium (the report page in a real headless browser, tests/test_report.py)
# and a PostgreSQL server (many search/bench workers on one database, tests/test_workers.py). Installed with
# apt-get when root; otherwise those tests are skipped with a message (CI=true makes them fail).
missing=()
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing ${missing[*]} (apt-get) for the tests" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "test.sh: missing ${missing[*]}: their tests are skipped (CI=true makes them fail); apt-get install" \
      "${missing[*]}" >&2
  fi
fi
unset SENTITUNE_PRECISION
.venv/bin/pytest -q
picked=$(.venv/bin/python -c 'import torch; from sentitune.precision import name, pick_precision
print(name(pick_precision("auto", torch.device("cpu"))))')
other=$([ "$picked" = bf16 ] && echo fp32 || echo bf16)
# Emulated bf16 (a CPU without it) costs minutes on the few heaviest numeric tests (marker heavy_in_emulation):
# they run in fp32 above and in native bf16 on CPUs that have it; the budget of the suite is ~10 minutes.
marker="numeric"
[ "$other" = bf16 ] && marker="numeric and not heavy_in_emulation"
echo "test.sh: auto picked $picked; the tests marked '$marker' again with SENTITUNE_PRECISION=$other" >&2
SENTITUNE_PRECISION=$other .venv/bin/pytest -q -m "$marker"
