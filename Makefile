# Each target sets itself up: a virtual environment in .venv, the CPU build of
# torch first, then the torch-free runtime distribution (runtime/), then the package (and
# its C++ extension) built against that torch; both editable.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
STAMP := $(VENV)/.mtl_deploy-installed
# Everything the tests exercise: the other runtimes a parity proof runs in, and ExecuTorch.
EXTRAS := export,dev,hf,openvino,tract,executorch
SOURCES := pyproject.toml setup.py runtime/pyproject.toml runtime/src/mtl_deploy_runtime/VERSION \
	$(shell find csrc -type f 2>/dev/null)

.PHONY: setup demo test bench gpu-check clean

setup: $(STAMP)

$(STAMP): $(SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==$(TORCH_VERSION)
	$(PY) -m pip install -q --disable-pip-version-check "setuptools>=64" wheel ninja
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation -e ./runtime
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[$(EXTRAS)]"
	touch $@

demo: $(STAMP)
	$(VENV)/bin/mtl-deploy demo --out demo-out

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[$(EXTRAS),bench]"
	$(PY) benchmarks/run.py
	$(PY) benchmarks/per_task_gradients.py
	$(PY) benchmarks/distributed_throughput.py
	$(PY) benchmarks/wrapped_overhead.py

# On a GPU machine with a CUDA torch and nvcc: builds the CUDA kernels against that
# python's torch (not .venv's CPU one), runs the gpu tests, times the CUDA ops.
GPU_PYTHON ?= python3
GPU_CHECK_OUT ?= gpu-check
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py --out $(GPU_CHECK_OUT)

clean:
	rm -rf build dist *.egg-info demo-out mtl_deploy/*.so
