"""The CUDA kernels compile on machines without a GPU: every .cu file with nvcc and the
build's own flags, and their torch-facing host code against torch's stable headers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from torch.utils.cpp_extension import include_paths

from mtl_deploy.ops import sources

NVCC = shutil.which("nvcc")


def cuda_include() -> Path | None:
    """The toolkit's include folder (holding cuda_runtime.h), next to nvcc's bin."""
    if NVCC is None:
        return None
    for root in (Path(NVCC).resolve().parents[1], Path("/usr/local/cuda")):
        if (root / "include" / "cuda_runtime.h").exists():
            return root / "include"
    return None


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("source", [p for p in sources.cuda_sources() if p.suffix == ".cu"], ids=lambda p: p.name)
def test_cuda_kernel_compiles(source, tmp_path):
    done = subprocess.run([NVCC, "-c", *sources.NVCC_FLAGS, str(source), "-o", str(tmp_path / "kernel.o")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "kernel.o").stat().st_size > 0


@pytest.mark.skipif(cuda_include() is None or shutil.which("g++") is None, reason="needs nvcc's CUDA headers and g++")
@pytest.mark.parametrize("source", [p for p in sources.cuda_sources() if p.suffix == ".cpp"], ids=lambda p: p.name)
def test_cuda_host_code_compiles(source):
    includes = [f"-I{p}" for p in (*include_paths(), cuda_include())]
    done = subprocess.run(["g++", "-fsyntax-only", *sources.CXX_FLAGS, *sources.CUDA_CXX_FLAGS, *includes, str(source)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def test_every_cuda_source_is_built():
    assert {p.name for p in sources.cuda_sources()} == {"inner_loop.cu", "multihead_linear_routed.cu", "ops.cpp"}
