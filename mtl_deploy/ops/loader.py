"""Finds, checks and loads the C++ kernels; decides which backend is live.

Order of preference, decided once on first use (never at import):

1. ``MTL_DEPLOY_BACKEND=reference`` forces the PyTorch reference.
2. The extension built by ``setup.py`` (``mtl_deploy/_C*.so``), if the source hash
   embedded in it matches the current ``csrc/`` (a stale build is never loaded).
3. A JIT build of ``csrc/`` with ``torch.utils.cpp_extension.load`` (ninja), cached
   per torch version and source hash, under a lock that a killed build cannot wedge.
4. The reference, with one ``warnings.warn`` saying why.

``MTL_DEPLOY_BACKEND=cpp`` makes step 4 an error instead (for CI).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from pathlib import Path

import torch

from . import sources

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
_lock = threading.Lock()
_loaded: str | None = None  # "cpp" or "reference" once decided
_failure: str = ""

# A JIT build takes seconds; a lock older than this belongs to a dead build.
LOCK_STALE_SECONDS = 600.0


def backend() -> str:
    """``"cpp"`` when the fused kernels are live, ``"reference"`` otherwise."""
    choice = os.environ.get("MTL_DEPLOY_BACKEND", "auto")
    if choice == "reference":
        return "reference"
    if choice == "auto" and _loaded is not None:
        return _loaded  # the per-call fast path: no lock once decided
    if choice not in ("auto", "cpp"):
        raise ValueError(f"MTL_DEPLOY_BACKEND must be 'auto', 'cpp' or 'reference', got {choice!r}")
    live = _ensure_loaded()
    if choice == "cpp" and live != "cpp":
        raise RuntimeError(f"MTL_DEPLOY_BACKEND=cpp but the C++ kernels are unavailable: {_failure}")
    return live


def runs_fused(t: torch.Tensor) -> bool:
    """Whether the fused kernels serve tensors on ``t``'s device: the CPU whenever the
    C++ kernels are live, CUDA when the build has the CUDA kernels too (a CPU-only
    build on a CUDA machine runs the reference there)."""
    if backend() != "cpp":
        return False
    if t.is_cpu:
        return True
    kind = t.device.type
    if kind not in _devices:
        _devices[kind] = torch._C._dispatch_has_kernel_for_dispatch_key("mtl_deploy::inner_loop", kind.upper())
    return _devices[kind]


_devices: dict[str, bool] = {}  # device type -> whether the loaded build has its kernels


def _ensure_loaded() -> str:
    global _loaded, _failure
    with _lock:
        if _loaded is None:
            try:
                _load_library()
                from . import registration

                registration.register()
                _loaded = "cpp"
            except Exception as exc:  # any build or load failure means: run the reference
                _loaded, _failure = "reference", f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"mtl_deploy.ops: C++ kernels unavailable ({_failure}); using the PyTorch reference",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return _loaded


def _load_library() -> None:
    have_sources = sources.CSRC.is_dir()
    current = sources.source_hash() if have_sources else None
    for built in sorted(_PACKAGE_DIR.glob("_C*.so")):
        if current is None or _embedded_hash(built) == current:
            torch.ops.load_library(str(built))
            return
    if current is None:
        raise FileNotFoundError(f"no built extension in {_PACKAGE_DIR} and no sources to build")
    _jit_build(current)


def _embedded_hash(path: Path) -> str | None:
    data = path.read_bytes()
    at = data.find(sources.HASH_MARKER)
    if at < 0:
        return None
    start = at + len(sources.HASH_MARKER)
    return data[start : data.index(b";", start)].decode()


def cache_dir(source_hash: str) -> Path:
    """Build directory for this torch version and these sources."""
    root = Path(os.environ.get("MTL_DEPLOY_CACHE", Path.home() / ".cache" / "mtl_deploy"))
    return root / f"torch-{torch.__version__}-{source_hash[:16]}"


def _jit_build(source_hash: str) -> None:
    from torch.utils import cpp_extension

    build_dir = cache_dir(source_hash)
    build_dir.mkdir(parents=True, exist_ok=True)
    with BuildLock(build_dir / "mtl_deploy.lock"):
        # torch's own baton file waits forever if a build was killed; holding our
        # lock means nobody else is building here, so any such file is stale.
        (build_dir / "lock").unlink(missing_ok=True)
        cuda = sources.cuda_build()
        cpp_extension.load(
            name=f"mtl_deploy_C_{source_hash[:12]}",
            sources=[str(p) for p in sources.cpp_sources() + (sources.cuda_sources() if cuda else [])],
            extra_cflags=sources.CXX_FLAGS + (sources.CUDA_CXX_FLAGS if cuda else []),
            extra_cuda_cflags=sources.NVCC_FLAGS,
            with_cuda=cuda,
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=False,
        )


class BuildLock:
    """Exclusive lock file holding the owner's pid, safe against dead owners.

    A lock whose pid is gone, or that is older than ``stale_after`` seconds, is
    broken; waiting gives up after ``timeout`` seconds with TimeoutError.
    """

    def __init__(self, path: Path, timeout: float = 900.0, stale_after: float = LOCK_STALE_SECONDS):
        self.path, self.timeout, self.stale_after = path, timeout, stale_after

    def __enter__(self) -> BuildLock:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if self._stale():
                    self.path.unlink(missing_ok=True)
                    continue
                if time.monotonic() > deadline:
                    raise TimeoutError(f"waited {self.timeout:.0f}s for build lock {self.path}") from None
                time.sleep(0.2)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)

    def _stale(self) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return True
        if age > self.stale_after:
            return True
        if not text.isdigit():
            # The owner writes its pid right after creating the file; an empty
            # file that stays empty means the owner died in between.
            return age > 5.0
        try:
            os.kill(int(text), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, owned by another user
        return False
