"""Where an op test's inputs live. The "cuda" backend runs the C++ kernels on CUDA
tensors (skipped without a GPU); the inputs are made on the CPU as for the other
backends and moved with :func:`on`, and results are compared on the CPU."""

from __future__ import annotations

import torch


def on(backend: str, obj):
    """obj with every tensor in it (dicts, lists, tuples) on the backend's device."""
    if backend != "cuda":
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to("cuda")
    if isinstance(obj, dict):
        return {k: on(backend, v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(on(backend, v) for v in obj)
    return obj


def cpu(tensors):
    """Detached CPU copies, for comparing against a CPU oracle."""
    return [t.detach().cpu() for t in tensors]
