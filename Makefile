# Two commands do all the set-up on a fresh machine:
#   make demo   venv + core + torch adapter, then `interp demo` on the bundled model
#   make test   venv + everything (torch, tensorflow, jax adapters, dev tools), then the tests
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

demo: $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/interp demo --overwrite

test: $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/ruff check .
	INTERP_TEST_BACKENDS=torch,tensorflow,jax WANDB_MODE=offline $(BIN)/python -m pytest -q

bench: $(BIN)/python
	$(BIN)/python benchmarks/bench_torch.py
