# Each target sets itself up: a virtual environment in .venv, the CPU build of
# torch first, then the package (and its C++ extension) built against that torch.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
STAMP := $(VENV)/.mtl_deploy-installed
SOURCES := pyproject.toml setup.py $(shell find csrc -type f 2>/dev/null)

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): $(SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==$(TORCH_VERSION)
	$(PY) -m pip install -q --disable-pip-version-check "setuptools>=64" wheel ninja
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[export,dev,hf]"
	touch $@

demo: $(STAMP)
	$(VENV)/bin/mtl-deploy demo --out demo-out

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[export,dev,hf,bench]"
	$(PY) benchmarks/run.py
	$(PY) benchmarks/per_task_gradients.py
	$(PY) benchmarks/distributed_throughput.py
	$(PY) benchmarks/wrapped_overhead.py

clean:
	rm -rf build dist *.egg-info demo-out mtl_deploy/*.so
