"""Where an op test's inputs live. The "cuda" backend runs the C++ kernels on CUDA
tensors (skipped without a GPU); the inputs are made on the CPU as for the other
backends and moved with :func:`on`, and results are compared on the CPU."""

from __future__ import annotations

import torch

from mtl_deploy.runs.device import to_device


def on(backend: str, obj):
    """obj with every tensor in it (dicts, lists, tuples) on the backend's device."""
    return to_device(obj, torch.device("cuda")) if backend == "cuda" else obj


def cpu(tensors):
    """Detached CPU copies, for comparing against a CPU oracle."""
    return [t.detach().cpu() for t in tensors]
