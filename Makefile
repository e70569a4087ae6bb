# The README's two commands. Both run scripts/setup.sh first (a no-op once done).
.PHONY: setup demo test lint

setup:
	@bash scripts/setup.sh

demo: setup  ## MiniLM (top 2 layers on a cached prefix) + NBSVM on 4,000 IMDb reviews, evaluated on 2,000 (configs/experiments/quickstart.yaml)
	.venv/bin/sentitune train --config configs/experiments/quickstart.yaml --overwrite

test: setup  ## lint + the test suite, numeric tests under both precisions (what CI runs; scripts/test.sh)
	bash scripts/test.sh

lint: setup
	.venv/bin/ruff check src tests benchmarks
