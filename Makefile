# Two commands do all the set-up on a fresh machine:
#   make demo   venv + core + torch adapter, then `interp demo` on the bundled model
#   make test   venv + everything (torch, tensorflow, jax adapters, Ray, dev tools), then ruff
#               and the tests
# A third builds the documentation: make docs (tutorials executed, site in build/site, checked in
# Debian's Chromium). CI (.ci/run) runs make test, then make docs.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: demo test docs bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

demo: $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/interp demo --overwrite

test: $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/ruff check .
	INTERP_TEST_BACKENDS=torch,tensorflow,jax INTERP_TEST_RAY=1 WANDB_MODE=offline $(BIN)/python -m pytest -q -m "not docs and not slow"

docs: $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt -r requirements-docs.txt
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	INTERP_TEST_DOCS=1 $(BIN)/python -m pytest -q -m docs tests/test_docs_site.py

bench: $(BIN)/python
	$(BIN)/python benchmarks/bench_torch.py
