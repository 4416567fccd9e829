# Two commands do all the set-up on a fresh machine:
#   make demo   venv + core + torch adapter, then `interp demo` on the bundled model
#   make test   venv + everything (torch, tensorflow, jax adapters, Ray, dev tools), then ruff,
#               mypy --strict on the public API ([tool.mypy] in pyproject.toml) and the tests
#   make test-cluster  the audit on a real two-node Ray cluster started on this machine
#               (`ray start`, 1 CPU per node) and its fault tests: marked `cluster`, each wait
#               with a timeout; about 2 minutes
# A third builds the documentation: make docs (tutorials executed, site in build/site, checked in
# Debian's Chromium).
# The model zoo has its own venv, $(ZOO) (default .venv-zoo, from requirements-zoo.txt: torch
# with torchvision, timm, transformers, pytorch-grad-cam; then requirements-zoo-nodeps.txt,
# without dependencies: quantus and ultralytics; 6 GB, ~5 min to build):
#   make test-zoo      the not-slow half of the torch model sweep, detection (torchvision,
#                      Ultralytics YOLO, Hugging Face DETR), segmentation and wrapper tests on
#                      real architectures (random weights, nothing downloaded), and agreement
#                      with the pytorch-grad-cam and quantus packages themselves
#   make models-table  every sweep (torch, keras, flax; slow half included, ~25 min), results in
#                      .zoo-results/, then docs/models.md from them
# make dist builds the sdists and wheels of the four distributions into dist/, runs twine check,
# installs the wheels in a fresh venv (build/dist-venv) and runs the installed `interp` and a
# smoke test there (scripts/check_dist.sh; 1.5 to 2.5 minutes; DIST_BACKENDS=torch: 1).
# CI (.ci/run) runs make test, make test-cluster, make dist, make test-zoo, then make docs.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
ZOO ?= .venv-zoo
# The zoo venv's stamp: a copy of the requirements it was built from (a venv's bin/python is a
# link to the system's, whose age says nothing about the venv).
ZOO_READY = $(ZOO)/installed-requirements-zoo.txt
ZOO_TESTS = tests/test_zoo_torch.py tests/test_detection.py tests/test_segmentation.py \
	tests/test_torch_wrappers.py tests/test_pytorch_grad_cam_package.py tests/test_zoo_attention.py \
	tests/test_metrics_quantus.py tests/test_yolo.py tests/test_detr.py

.PHONY: demo test test-cluster dist test-zoo models-table docs bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The zoo venv: built, or brought up to date, whenever requirements-zoo.txt or
# requirements-zoo-nodeps.txt is newer than it. It installs from a copy, which becomes the
# stamp once installed: an edit made meanwhile is installed by the next run. The second file
# goes in without its packages' declared dependencies (it says why).
$(ZOO_READY): requirements-zoo.txt requirements-zoo-nodeps.txt
	$(PYTHON) -m venv $(ZOO)
	$(ZOO)/bin/python -m pip install -q --upgrade pip
	cp requirements-zoo.txt $@.new
	$(ZOO)/bin/pip install -q -r $@.new
	$(ZOO)/bin/pip install -q --no-deps -r requirements-zoo-nodeps.txt
	mv $@.new $@

demo: $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/interp demo --overwrite

# keras-hub's declared dependencies pull the full tensorflow and tensorflow-text beside
# tensorflow-cpu; building its image classifiers from a config (the test) needs only these.
KERAS_HUB = keras-hub==0.32.0 regex==2026.11.19 tokenizers==0.23.3

test: $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps $(KERAS_HUB)
	$(BIN)/ruff check .
	$(BIN)/mypy
	INTERP_TEST_BACKENDS=torch,tensorflow,jax INTERP_TEST_RAY=1 WANDB_MODE=offline $(BIN)/python -m pytest -q -m "not docs and not slow and not cluster"

# Ray nodes of their own (not the tests' Ray of `make test`): run after it, not beside it.
test-cluster: $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	INTERP_TEST_BACKENDS=torch INTERP_TEST_RAY=1 $(BIN)/python -m pytest -q -m cluster tests/test_audit_cluster.py

dist: $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	TOOLS_PYTHON=$(BIN)/python PYTHON=$(PYTHON) scripts/check_dist.sh

test-zoo: $(ZOO_READY)
	INTERP_TEST_ZOO=1 $(ZOO)/bin/python -m pytest -q -m "not slow" $(ZOO_TESTS)

models-table: $(BIN)/python $(ZOO_READY)
	$(BIN)/pip install -q -r requirements-dev.txt
	rm -rf .zoo-results
	INTERP_TEST_ZOO=1 INTERP_ZOO_RESULTS=.zoo-results $(ZOO)/bin/python -m pytest -q tests/test_zoo_torch.py
	INTERP_TEST_BACKENDS=tensorflow,jax INTERP_ZOO_RESULTS=.zoo-results $(BIN)/python -m pytest -q tests/test_zoo_keras.py tests/test_zoo_flax.py
	$(BIN)/python scripts/make_models_table.py .zoo-results

docs: $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt -r requirements-docs.txt
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	INTERP_TEST_DOCS=1 $(BIN)/python -m pytest -q -m docs tests/test_docs_site.py tests/test_view_browser.py

bench: $(BIN)/python
	$(BIN)/python benchmarks/bench_torch.py
