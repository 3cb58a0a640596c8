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
# uv (from PyPI) installs the same packages in about 35 s where pip takes about 110 s on a 2-core machine;
# INSTALLER=pip uses pip alone, with its own configuration (an index mirror, say). If uv fails, pip is tried.
INSTALLER ?= uv
MAIN_EXTRAS := .[vdl,test]
TEST_EXTRAS := .[test]
# $(call install,VENV_PYTHON,REQUIREMENTS)
install = if [ "$(INSTALLER)" = uv ] && $(1) -m pip install $(PIP_FLAGS) uv; then \
	  $(dir $(1))uv pip install -q --compile-bytecode --python $(1) $(2) || $(1) -m pip install $(PIP_FLAGS) $(2); \
	else $(1) -m pip install $(PIP_FLAGS) $(2); fi

.PHONY: demo demo-dygraph test test-fast test-paddle26 lint bench clean-demo

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(call install,$(PY),$(PADDLE) -e "$(MAIN_EXTRAS)")
	touch $@

$(VENV26)/.installed: setup.py
	$(PYTHON) -m venv $(VENV26)
	$(call install,$(PY26),$(PADDLE26) "numpy<2" "opencv-python-headless<4.11" -e "$(TEST_EXTRAS)")
	touch $@

demo: $(VENV)/.installed
	$(PY) tools/demo.py --mode executor

demo-dygraph: $(VENV)/.installed
	$(PY) tools/demo.py --mode dygraph

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check danet tools tests setup.py

test: lint $(VENV)/.installed test-paddle26
	$(PY) -m pytest -q tests

# Under a minute and no process started: the tests on tiny tensors and in-process runs.
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not process and not slow and not partners" tests

# Users on AI Studio still run Paddle 2.6: the fast tests run there too.
test-paddle26: $(VENV26)/.installed
	$(PY26) -m pytest -q -m "not slow and not paddle3" tests

bench: $(VENV)/.installed
	$(PY) tools/benchmark.py

clean-demo:
	rm -rf dataset/cityscapes checkpoint/demo_* output/demo*
