"""Runs every kernel test on both backends: the C++ kernels and the PyTorch reference."""

from __future__ import annotations

import pytest

from mtl_deploy import ops
from mtl_deploy.ops import loader


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
