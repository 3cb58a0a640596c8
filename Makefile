# Everything sets itself up: a virtual environment per Paddle version, Paddle for the CPU, this package.
# make demo         the main job on the embedded synthetic data set (static-graph training, conversion, eval)
# make demo-dygraph the same with the dygraph trainer
# make test         the test suite (Paddle 3.3.1), ruff, and the fast tests on Paddle 2.6.2
PYTHON ?= python3
PADDLE ?= paddlepaddle==3.3.1
PADDLE26 ?= paddlepaddle==2.6.2
VENV := .venv
VENV26 := .venv-paddle26
PY := $(VENV)/bin/python
PY26 := $(VENV26)/bin/python
PIP_FLAGS := --disable-pip-version-check -q
export OMP_NUM_THREADS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: demo demo-dygraph test test-fast test-paddle26 lint bench clean-demo

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) $(PADDLE)
	$(PY) -m pip install $(PIP_FLAGS) -e ".[vdl,test]"
	touch $@

$(VENV26)/.installed: setup.py
	$(PYTHON) -m venv $(VENV26)
	$(PY26) -m pip install $(PIP_FLAGS) $(PADDLE26) "numpy<2" "opencv-python-headless<4.11"
	$(PY26) -m pip install $(PIP_FLAGS) -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(PY) tools/demo.py --mode executor

demo-dygraph: $(VENV)/.installed
	$(PY) tools/demo.py --mode dygraph

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check danet tools tests setup.py

test: lint $(VENV)/.installed test-paddle26
	$(PY) -m pytest -q tests

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" tests

# Users on AI Studio still run Paddle 2.6: the fast tests run there too.
test-paddle26: $(VENV26)/.installed
	$(PY26) -m pytest -q -m "not slow and not paddle3" tests

bench: $(VENV)/.installed
	$(PY) tools/benchmark.py

clean-demo:
	rm -rf dataset/cityscapes checkpoint/demo_* output/demo*
