"""Shared fixtures: one small trained checkpoint and its export, made once per session, and
the choice of kernel backend (C++ or the PyTorch reference) for tests that run on both."""

from __future__ import annotations

import pytest

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


@pytest.fixture(params=["cpp", "reference"])
def backend(request, monkeypatch):
    """Selects the backend behind mtl_deploy.ops for one test."""
    if request.param == "reference":
        monkeypatch.setenv("MTL_DEPLOY_BACKEND", "reference")
    else:
        monkeypatch.delenv("MTL_DEPLOY_BACKEND", raising=False)
        if ops.backend() != "cpp":
            pytest.skip(f"C++ kernels not available: {loader._failure}")
    return request.param
