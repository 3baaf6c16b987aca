"""ONNX Runtime sessions and the hardware they run on: the one place that builds a session
and names execution providers, so serving, on-device adaptation and the parity proof follow
the same device rules.

A device is an ordered provider list. Its first provider is the one asked for, and it must
be active in the built session: ONNX Runtime's own habit is to drop a provider that fails
to start and carry on with the CPU, which would serve on the wrong hardware without a word.
The providers after it only run the operators the first one lacks, as ONNX Runtime intends.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
from pathlib import Path

import onnxruntime as ort

from mtl_deploy_runtime.errors import InputError, MtlDeployError, first_line

PROVIDERS = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}
DEVICES = ("auto", *PROVIDERS)
GPU_INSTALL = "pip uninstall -y onnxruntime && pip install onnxruntime-gpu"  # the two builds cannot share one env
STARTS_WITH = {
    "cuda": "an NVIDIA GPU and driver, and the CUDA and cuDNN libraries this onnxruntime-gpu was built for",
    "tensorrt": "an NVIDIA GPU and driver, the CUDA and cuDNN libraries, and TensorRT (pip install tensorrt)",
}


class ProviderError(MtlDeployError):
    """The execution provider a device needs is not installed, or did not start."""


def resolve_device(device: str) -> str:
    """`device` as one of cpu, cuda, tensorrt, or cuda:N / tensorrt:N for GPU N (ONNX
    Runtime's device_id; plain cuda is GPU 0). "auto" is CUDA when the installed ONNX
    Runtime has it, else the CPU; never TensorRT, which every onnxruntime-gpu wheel lists
    whether or not TensorRT itself is installed, and which builds an engine per model and
    input shape (seconds to minutes) before its first answer: ask for it by name."""
    name = device.strip().lower() if isinstance(device, str) else ""
    kind, colon, index = name.partition(":")
    if kind not in DEVICES or (colon and (kind not in STARTS_WITH or not index.isdigit() or len(index) > 4)):
        raise InputError(f"unknown device {str(device)[:40]!r}; use one of {', '.join(DEVICES)}, or cuda:N / "
                         "tensorrt:N for GPU N")
    if kind == "auto":
        return "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
    return f"{kind}:{int(index)}" if colon and int(index) else kind


def device_kind(device: str) -> tuple[str, int]:
    """A resolved device as (cpu | cuda | tensorrt, GPU index)."""
    kind, _, index = device.partition(":")
    return kind, int(index or 0)


def session_for(path: str | Path, device: str = "cpu", threads: int | None = None) -> ort.InferenceSession:
    """A session for the graph at `path` on `device`, all graph optimisations on, its
    device's provider checked active (else `ProviderError`). Small graphs gain nothing from
    many CPU threads, so the default is the core count capped at 4 (0: ONNX Runtime's choice)."""
    device = resolve_device(device)
    kind, index = device_kind(device)
    wanted, available = PROVIDERS[kind][0], ort.get_available_providers()
    if wanted not in available:
        raise ProviderError(f"device {device!r} needs {wanted}, which this ONNX Runtime {ort.__version__} lacks "
                            f"(it has {', '.join(available)}); install the GPU build: {GPU_INSTALL}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads if threads is not None else min(4, os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    notes = _load_cuda_libraries() if device != "cpu" else ""
    providers = [_configured(name, index) for name in PROVIDERS[kind] if name in available]
    needs = STARTS_WITH.get(kind, "") + (f" and a GPU {index}" if index else "")  # for the errors below
    try:  # enable_fallback=0: ONNX Runtime would otherwise retry on the CPU, printing to stdout
        session = ort.InferenceSession(str(path), options, providers=providers, enable_fallback=0)
    except Exception as err:  # ONNX Runtime raises its own types for a corrupt or foreign file, or a failed provider
        first = first_line(err)
        if device == "cpu":
            raise MtlDeployError(f"ONNX Runtime cannot load {path} ({first}); export again") from None
        raise ProviderError(f"ONNX Runtime cannot run {path} with {wanted} ({first}); device {device!r} needs "
                            f"{needs}") from None
    if wanted not in session.get_providers():
        cause = first_line(notes)
        raise ProviderError(f"device {device!r}: {wanted} is installed but did not start"
                            + (f" ({cause})" if cause else "") + f"; it needs {needs}, or serve with device 'cpu'")
    return session


def _configured(provider: str, index: int = 0):
    """A provider with the options the library relies on: the GPU it runs on (`device_id`),
    and CUDA computing float32 matrix products in full float32, not TF32 (ONNX Runtime's
    default on Ampere and newer, about 1e-3 off), so a GPU serves the numbers the export
    proved; that option exists from 1.18."""
    if provider == "CPUExecutionProvider":
        return provider
    options = {"device_id": str(index)}
    if provider == "CUDAExecutionProvider" and tuple(int(p) for p in ort.__version__.split(".")[:2]) >= (1, 18):
        options["use_tf32"] = "0"
    return provider, options


def _load_cuda_libraries() -> str:
    """Let a GPU provider find the CUDA and cuDNN libraries a torch wheel installed: ONNX
    Runtime's `preload_dlls` (1.21 and newer) loads them from where pip put them (the nvidia
    packages; torch/lib on Windows) without importing torch, so the runtime stays torch-free.
    Returns what it printed, kept for an error message rather than mixed into the output."""
    if not hasattr(ort, "preload_dlls") or not _torch_installed():
        return ""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            ort.preload_dlls()
        except (OSError, RuntimeError) as err:  # a library it found but could not load: the session check says so
            print(err)
    return printed.getvalue()


def _torch_installed() -> bool:
    """Whether torch could be imported, found without importing it (None in sys.modules:
    blocked on purpose, as a torch-free deployment tests itself)."""
    if "torch" in sys.modules:
        return sys.modules["torch"] is not None
    return importlib.util.find_spec("torch") is not None
