# The README's two commands: `make demo` and `make test`. Both set up first.
.PHONY: setup demo up test lint policy-test pytest bench bench-full clean

setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/regate demo --config examples/regate.toml

up: setup
	.venv/bin/regate demo --prepare --config examples/regate.toml
	.venv/bin/regate up --config examples/regate.toml

test: setup lint policy-test pytest

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

policy-test:
	.venv/bin/regate policy test --dir policies

pytest:
	.venv/bin/python -m pytest

# Benchmarks (docs/benchmarks.md): a bounded run of a few minutes, or the issue's sizes.
bench: setup
	PYTHONPATH=$(CURDIR) .venv/bin/python bench/run_all.py

bench-full: setup
	PYTHONPATH=$(CURDIR) .venv/bin/python bench/run_all.py --full

clean:
	rm -rf .regate .pytest_cache .mypy_cache .ruff_cache
