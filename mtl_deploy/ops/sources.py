"""Where the C++ sources live, how they are compiled, and their content hash.

Imported by ``setup.py`` straight from this file (before the package exists) and by
the loader, so the ahead-of-time build and the JIT fallback use the same flags and
agree on which sources a binary was built from. Standard library only.
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

HASH_MARKER = b"MTL_DEPLOY_SOURCE_HASH="


def cpp_sources(csrc: Path = CSRC) -> list[Path]:
    """The translation units of the CPU extension (CUDA files are built separately)."""
    return sorted(csrc.glob("*.cpp"))


def source_hash(csrc: Path = CSRC) -> str:
    """SHA-256 over every file under ``csrc`` (relative path and bytes), in hex."""
    digest = hashlib.sha256()
    for path in sorted(p for p in csrc.rglob("*") if p.is_file()):
        digest.update(path.relative_to(csrc).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()
