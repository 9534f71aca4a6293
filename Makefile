# The two set-up commands of the README: `make demo` and `make test`.
.PHONY: setup demo test lint bench bundle

setup:
	bash scripts/bootstrap.sh

demo: setup
	.venv/bin/vigil demo

test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports --no-cache
	.venv/bin/python -m pytest -q -p no:cacheprovider

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/lint-imports --no-cache

bench: setup
	.venv/bin/python -m benches.run_all

# Rebuild the committed default bundle (README "Training"): import PhysioNet 2019 set A,
# train and compare LSTM/GRU/two-branch + NEWS2/logistic in MLflow, convert the champion
# to int8, sign it with data/keys/signing.key (never committed) and ship its public key.
TRAIN_ARGS ?= --arch lstm,gru,two_branch --window 12 --units 32 --epochs 12 --batch-size 1024 --lr 0.002 --class-weight auto --seed 2019
bundle: setup
	test -f data/canonical/physionet2019.parquet || .venv/bin/vigil convert physionet
	test -f data/keys/signing.key || .venv/bin/vigil hub keys init
	.venv/bin/vigil hub train $(TRAIN_ARGS) --bundle models/default
	mkdir -p models/trusted_keys && cp data/keys/signing.pub models/trusted_keys/default.pub
