# The two set-up commands of the README: `make demo` and `make test`.
.PHONY: setup demo test lint bench bundle

setup:
	bash scripts/bootstrap.sh

demo: setup
	.venv/bin/vigil demo

test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/python -m pytest -q -p no:cacheprovider

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

bench: setup
	.venv/bin/python benches/run_all.py
