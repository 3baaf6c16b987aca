"""Backend selection, the stale-build check, the JIT fallback and its build lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from mtl_deploy import ops
from mtl_deploy.ops import loader, sources

ROOT = Path(__file__).resolve().parents[2]


def test_environment_forces_reference(monkeypatch):
    monkeypatch.setenv("MTL_DEPLOY_BACKEND", "reference")
    assert ops.backend() == "reference"


def test_unknown_backend_name_is_rejected(monkeypatch):
    monkeypatch.setenv("MTL_DEPLOY_BACKEND", "fortran")
    with pytest.raises(ValueError, match="MTL_DEPLOY_BACKEND"):
        ops.backend()


def test_failed_build_falls_back_with_one_warning(monkeypatch):
    monkeypatch.delenv("MTL_DEPLOY_BACKEND", raising=False)
    monkeypatch.setattr(loader, "_loaded", None)
    monkeypatch.setattr(loader, "_failure", "")

    def no_compiler():
        raise FileNotFoundError("c++: command not found")

    monkeypatch.setattr(loader, "_load_library", no_compiler)
    with pytest.warns(RuntimeWarning, match="using the PyTorch reference"):
        assert ops.backend() == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ops.backend() == "reference"  # decided once: no second warning
    monkeypatch.setenv("MTL_DEPLOY_BACKEND", "cpp")
    with pytest.raises(RuntimeError, match="command not found"):
        ops.backend()


def test_built_extension_matches_sources():
    built = sorted((ROOT / "mtl_deploy").glob("_C*.so"))
    if not built:
        pytest.skip("no ahead-of-time build in the tree (JIT fallback in use)")
    assert loader._embedded_hash(built[0]) == sources.source_hash()


def test_source_hash_tracks_contents(tmp_path):
    (tmp_path / "a.cpp").write_text("int a;")
    before = sources.source_hash(tmp_path)
    (tmp_path / "a.cpp").write_text("int b;")
    assert sources.source_hash(tmp_path) != before


def test_lock_from_dead_process_is_broken(tmp_path):
    lock = tmp_path / "build.lock"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(dead.stdout.strip())
    with loader.BuildLock(lock, timeout=5):
        assert lock.read_text() == str(os.getpid())
    assert not lock.exists()


def test_lock_older_than_stale_limit_is_broken(tmp_path):
    lock = tmp_path / "build.lock"
    lock.write_text(str(os.getpid()))  # alive, but far too old
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with loader.BuildLock(lock, timeout=5, stale_after=60):
        assert lock.read_text() == str(os.getpid()) and time.time() - lock.stat().st_mtime < 60  # taken over
    assert not lock.exists()


def test_live_lock_times_out_instead_of_hanging(tmp_path):
    lock = tmp_path / "build.lock"
    lock.write_text(str(os.getpid()))
    with pytest.raises(TimeoutError):
        with loader.BuildLock(lock, timeout=0.5):
            pass


def test_jit_build_compiles_and_registers(tmp_path):
    # A fresh process (the ops may already be loaded here) builds csrc/ into an
    # empty cache and runs a kernel from it; a leftover torch baton must not hang it.
    cache = tmp_path / "cache"
    build_dir = cache / loader.cache_dir(sources.source_hash()).name
    build_dir.mkdir(parents=True)
    (build_dir / "lock").write_text("")
    script = (
        "import torch; from mtl_deploy.ops import loader, registration, sources\n"
        "loader._jit_build(sources.source_hash()); registration.register()\n"
        "out = torch.ops.mtl_deploy.multihead_linear(torch.ones(2, 3), torch.ones(1, 2, 3), torch.zeros(1, 2), None)\n"
        "assert out.shape == (2, 1, 2) and float(out.sum()) == 12.0\n"
    )
    env = os.environ | {"MTL_DEPLOY_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
