# Everything sets itself up: a virtual environment per Paddle version, Paddle for the CPU, this package.
# make demo         the main job on the embedded synthetic data set (static-graph training, conversion, eval)
# make demo-dygraph the same with the dygraph trainer
# make test         the test suite (Paddle 3.3.1) with the partner implementations' checkpoints, ruff, and the
#                   fast tests on Paddle 2.6.2
# make test-fast    under a minute, no process started
PYTHON ?= python3
PADDLE ?= paddlepaddle==3.3.1
PADDLE26 ?= paddlepaddle==2.6.2
VENV := .venv
VENV26 := .venv-paddle26
# The other DANet implementations, for the import tests: torch-based ones in their own venv, PaddleSeg in the
# Paddle 2.6 one (it needs numpy < 2). Their checkpoints (~1 GB, made by their own code) go to PARTNER_DIR.
VENVP := .venv-partners
PARTNER_DIR := .partners
PY := $(VENV)/bin/python
PY26 := $(VENV26)/bin/python
PIP_FLAGS := --disable-pip-version-check -q
# uv (from PyPI) installs the same packages in about 35 s where pip takes about 110 s on a 2-core machine;
# INSTALLER=pip uses pip alone, with its own configuration (an index mirror, say). If uv fails, pip is tried.
INSTALLER ?= uv
MAIN_EXTRAS := .[vdl,test,onnx]
TEST_EXTRAS := .[test,onnx-paddle26]
# $(call install,VENV_PYTHON,REQUIREMENTS)
install = if [ "$(INSTALLER)" = uv ] && $(1) -m pip install $(PIP_FLAGS) uv; then \
	  $(dir $(1))uv pip install -q --compile-bytecode --python $(1) $(2) || $(1) -m pip install $(PIP_FLAGS) $(2); \
	else $(1) -m pip install $(PIP_FLAGS) $(2); fi

.PHONY: demo demo-dygraph test test-fast test-paddle26 lint bench clean-demo partners peer-venv gpu-check

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(call install,$(PY),$(PADDLE) -e "$(MAIN_EXTRAS)")
	touch $@

$(VENV26)/.installed: setup.py
	$(PYTHON) -m venv $(VENV26)
	$(call install,$(PY26),$(PADDLE26) "numpy<2" "opencv-python-headless<4.11" -e "$(TEST_EXTRAS)")
	touch $@

# pip, not uv, for torch: torch 2.13.0 is a local CPU build here, uv would fetch a CUDA build of several GB.
$(VENVP)/.installed: tests/partners/requirements-torch.txt tests/partners/requirements-frameworks.txt
	$(PYTHON) -m venv $(VENVP)
	$(VENVP)/bin/python -m pip install $(PIP_FLAGS) -r tests/partners/requirements-torch.txt
	$(VENVP)/bin/python -m pip install $(PIP_FLAGS) --no-deps -r tests/partners/requirements-frameworks.txt
	touch $@

$(VENV26)/.paddleseg: $(VENV26)/.installed tests/partners/requirements-paddleseg.txt
	$(PY26) -m pip install $(PIP_FLAGS) -r tests/partners/requirements-paddleseg.txt
	$(PY26) -m pip install $(PIP_FLAGS) --no-deps paddleseg==2.8.0
	touch $@

$(PARTNER_DIR)/.made: $(VENVP)/.installed $(VENV26)/.paddleseg $(wildcard tests/partners/*.py)
	rm -rf $(PARTNER_DIR) && mkdir -p $(PARTNER_DIR)
	$(VENVP)/bin/python tests/partners/make_mmseg.py $(PARTNER_DIR)
	$(VENVP)/bin/python tests/partners/make_ssseg.py $(PARTNER_DIR)
	$(PY26) tests/partners/make_paddleseg.py $(PARTNER_DIR)
	touch $@

partners: $(PARTNER_DIR)/.made

# PaddleSeg's DANet on the same Paddle as ours, for `danet-benchmark --peer .venv-peer/bin/python`.
.venv-peer/.installed:
	$(PYTHON) -m venv .venv-peer
	.venv-peer/bin/python -m pip install $(PIP_FLAGS) $(PADDLE) "numpy<2" six PyYAML requests scikit-learn scipy
	.venv-peer/bin/python -m pip install $(PIP_FLAGS) --no-deps paddleseg==2.8.0
	touch $@

peer-venv: .venv-peer/.installed

demo: $(VENV)/.installed
	$(PY) tools/demo.py --mode executor

demo-dygraph: $(VENV)/.installed
	$(PY) tools/demo.py --mode dygraph

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check danet tools tests setup.py

test: lint $(VENV)/.installed test-paddle26 partners
	DANET_PARTNER_DIR=$(PARTNER_DIR) DANET_PARTNER_PYTHON=$(VENVP)/bin/python $(PY) -m pytest -q tests

# Under a minute and no process started: the tests on tiny tensors and in-process runs.
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not process and not slow and not heavy and not partners" tests

# Users on AI Studio still run Paddle 2.6: the fast tests run there too.
test-paddle26: $(VENV26)/.installed
	$(PY26) -m pytest -q -m "not slow and not paddle3 and not partners" tests

# Every path this project cannot run without a GPU (AMP, SyncBatchNorm, fleet, the SDPA attention, Paddle
# Inference on the GPU, peak GPU memory): run it where paddlepaddle-gpu is installed; exit 2 in one line without a GPU.
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) -m danet.tools.gpu_check --json output/gpu_check.json

bench: $(VENV)/.installed
	$(PY) tools/benchmark.py

clean-demo:
	rm -rf dataset/cityscapes checkpoint/demo_* output/demo*
