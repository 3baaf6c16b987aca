"""Where the C++ and CUDA sources live, how they are compiled, and their content hash.

Imported by ``setup.py`` straight from this file (before the package exists) and by
the loader, so the ahead-of-time build and the JIT fallback use the same flags and
agree on which sources a binary was built from. Standard library only at import
(``cuda_build`` imports torch when called).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# Repository layout: <root>/csrc next to <root>/mtl_deploy/ops/sources.py.
CSRC = Path(__file__).resolve().parents[2] / "csrc"

# Target torch's stable C ABI from 2.10 on: kernels compile in seconds and the
# binary keeps working across torch upgrades. -march=native because the binary is
# built on the machine that runs it (editable install or per-user JIT cache).
CXX_FLAGS = [
    "-O3",
    "-fno-semantic-interposition",
    "-std=c++17",
    "-march=native",
    "-mprefer-vector-width=512",
    "-fopenmp-simd",
    "-ffp-contract=fast",
    "-DTORCH_TARGET_VERSION=0x020a000000000000",
    "-DPy_LIMITED_API=0x030a0000",
]

# The CUDA kernels: machine code for Ampere (sm_80) and Hopper (sm_90), plus PTX
# that later chips compile at load time. They use no sm_90a-only instructions.
NVCC_FLAGS = [
    "-O3",
    "-std=c++17",
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_90,code=compute_90",
]
# The host half of the CUDA ops (csrc/cuda/ops.cpp) needs the CUDA shim of torch.
CUDA_CXX_FLAGS = ["-DUSE_CUDA"]

HASH_MARKER = b"MTL_DEPLOY_SOURCE_HASH="


def cpp_sources(csrc: Path = CSRC) -> list[Path]:
    """The translation units of the CPU kernels (every build has them)."""
    return sorted(csrc.glob("*.cpp"))


def cuda_sources(csrc: Path = CSRC) -> list[Path]:
    """The CUDA kernels (``*.cu``) and their torch-facing host code (``*.cpp``)."""
    return sorted((csrc / "cuda").glob("*.cu")) + sorted((csrc / "cuda").glob("*.cpp"))


def cuda_build() -> bool:
    """Whether the CUDA kernels are built too: the installed torch has CUDA and its
    toolkit's nvcc is found (``MTL_DEPLOY_CUDA=0`` opts out). A CPU torch builds the
    CPU kernels alone."""
    import os

    if os.environ.get("MTL_DEPLOY_CUDA", "1") == "0":
        return False
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.version.cuda is not None and CUDA_HOME is not None and (Path(CUDA_HOME) / "bin" / "nvcc").exists()


def source_hash(csrc: Path = CSRC) -> str:
    """SHA-256 over every file under ``csrc`` (relative path and bytes), in hex."""
    digest = hashlib.sha256()
    for path in sorted(p for p in csrc.rglob("*") if p.is_file()):
        digest.update(path.relative_to(csrc).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()
