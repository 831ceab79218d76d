# The README's two commands: `make demo` and `make test`. Both set up first.
.PHONY: setup demo up test lint policy-test pytest clean

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

clean:
	rm -rf .regate .pytest_cache .mypy_cache .ruff_cache
