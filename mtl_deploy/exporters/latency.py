"""Serving latency of an export next to PyTorch eager: medians after warm-up, both
runtimes on one thread, same inputs, measured side by side in one process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtl_deploy.exporters.verify import random_inputs
from mtl_deploy.models.inputs import signature_of
from mtl_deploy.runtime.session import session_for
from mtl_deploy.timing import median_seconds


def median_ms(fn: Callable[[], object], repeats: int = 200, warmup: int = 20) -> float:
    return median_seconds(fn, repeats, warmup) * 1e3


def serving_latency(model: nn.Module, onnx_path: str | Path, batch_sizes=(1, 64), repeats: int = 200) -> list[dict]:
    """Per batch size: median ms of ONNX Runtime and of PyTorch eager (no_grad), 1 thread each."""
    session = session_for(onnx_path, threads=1)
    signature = signature_of(model)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for batch in batch_sizes:
            inputs = random_inputs(model, batch)
            feeds = {name: np.ascontiguousarray(value.numpy()) for name, value in inputs.items()}
            packed = signature.pack(list(inputs.values()))
            with torch.inference_mode():
                eager = median_ms(lambda: model(packed), repeats)
            onnx_ms = median_ms(lambda: session.run(None, feeds), repeats)
            rows.append({"batch": batch, "onnxruntime_ms": onnx_ms, "pytorch_ms": eager})
    finally:
        torch.set_num_threads(previous_threads)
    return rows
