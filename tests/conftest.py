"""Shared fixtures: one small trained checkpoint and its export, made once per session, and
the choice of kernel backend (C++ or the PyTorch reference, on the CPU, or C++ on a CUDA
device) for tests that run on each."""

from __future__ import annotations

import pytest
import torch

import mtl_deploy
from mtl_deploy import ops
from mtl_deploy.config import RunConfig
from mtl_deploy.data import synthetic_family
from mtl_deploy.mtl import fit
from mtl_deploy.ops import loader


def quick_config(epochs: int = 30) -> RunConfig:
    config = RunConfig()
    config.model.trunk = {"type": "mlp", "hidden": [32, 32], "activation": "relu"}
    config.train.epochs = epochs
    return config


@pytest.fixture(scope="session")
def fitted():
    return fit(synthetic_family(n_rows=200, seed=0), quick_config(), progress=False)


@pytest.fixture(scope="session")
def checkpoint_dir(fitted, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint"
    mtl_deploy.save(fitted.model, path, sample_inputs=fitted.val.x)
    return path


@pytest.fixture(scope="session")
def export_dir(checkpoint_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "export"
    mtl_deploy.export(checkpoint_dir, path)
    return path


@pytest.fixture(params=["cpp", "reference", pytest.param("cuda", marks=pytest.mark.gpu)])
def backend(request, monkeypatch):
    """Selects the backend behind mtl_deploy.ops for one test: the C++ kernels or the
    reference on the CPU, or the C++ kernels on a CUDA device (tests/ops/devices.py)."""
    if request.param == "reference":
        monkeypatch.setenv("MTL_DEPLOY_BACKEND", "reference")
        return request.param
    monkeypatch.delenv("MTL_DEPLOY_BACKEND", raising=False)
    if ops.backend() != "cpp":
        pytest.skip(f"C++ kernels not available: {loader._failure}")
    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")
        if not loader.runs_fused(torch.empty(0, device="cuda")):
            pytest.skip("this build of the kernels has no CUDA kernels (built with a CPU torch or without nvcc)")
    return request.param
