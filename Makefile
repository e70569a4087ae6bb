# The README's two commands. Both run scripts/setup.sh first (a no-op once done).
.PHONY: setup demo test lint

setup:
	@bash scripts/setup.sh

demo: setup  ## LoRA fine-tune of MiniLM on 4,000 IMDb reviews + evaluation on 2,000 (configs/minilm-lora-quickstart.yaml)
	.venv/bin/sentitune train --config configs/minilm-lora-quickstart.yaml --overwrite

test: setup  ## the test suite (what CI runs)
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/pytest -q

lint: setup
	.venv/bin/ruff check src tests benchmarks
