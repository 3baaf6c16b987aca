"""Where training computes: the device a config's `device` names ("cpu", "cuda", "cuda:N",
"auto"), refused in one line when this machine lacks it, and how batches get there.

Data, sampling and bookkeeping stay on the CPU; the model and each batch live on the
device, and the trained model goes back to where it came from, so a checkpoint written
after GPU training is the same kind of file as one written after CPU training.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from mtl_deploy.errors import InputError

CPU = torch.device("cpu")


def training_device(name: str) -> torch.device:
    """The torch.device `name` means on this machine ("auto": cuda when torch sees a GPU);
    a CUDA device torch cannot use is refused before anything is written."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):  # a config built in Python, never checked against its rule
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise InputError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto")
    if device.type == "cpu":
        return device
    if not torch.cuda.is_available():
        raise InputError(f"device {name!r} needs a CUDA GPU, and torch {torch.__version__} sees none on this "
                         "machine; train with --device cpu (or auto)")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise InputError(f"device {name!r} does not exist: this machine has {count} CUDA device(s), "
                         f"cuda:0 to cuda:{count - 1}; choose one of them, or --device cuda")
    return device


def to_device(value: Any, device: torch.device) -> Any:
    """`value` with every tensor in it on `device`: a batch's inputs (a tensor, a tuple or a
    dict of named tensors) or its targets (task name -> tensor)."""
    if torch.is_tensor(value):
        return value.to(device)
    if isinstance(value, dict):
        return {key: to_device(item, device) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(item, device) for item in value)
    return value


def module_device(module: nn.Module) -> torch.device:
    """The device `module`'s weights are on (the CPU for a module without any)."""
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return CPU if first is None else first.device
