"""The optional CUDA kernels compile with nvcc (a build check: no GPU runs them here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CUDA_SOURCES = sorted((Path(__file__).resolve().parents[2] / "csrc" / "cuda").glob("*.cu"))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda p: p.name)
def test_cuda_kernel_compiles(source, tmp_path):
    done = subprocess.run(["nvcc", "-c", str(source), "-o", str(tmp_path / "kernel.o")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "kernel.o").stat().st_size > 0
