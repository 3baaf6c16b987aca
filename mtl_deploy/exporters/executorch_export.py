"""`export(..., format="executorch")`: an ExecuTorch program, for phones and embedded
devices that run neither Python nor ONNX Runtime.

- a multi-task model: `model.pte`, the task outputs as a tuple in the manifest's order;
- a few-shot model: `adapter.pte`, the adaptation graph (support_x, support_y, query_x) ->
  query_pred. It holds inference operators only (the SGD steps are unrolled), so a device
  adapts without ExecuTorch's training extension.

Programs are lowered to the XNNPACK backend (ExecuTorch's portable kernels run what it does
not take), then loaded back in ExecuTorch's own runtime and proved against PyTorch like
every other format. ExecuTorch plans its memory ahead of time for the largest shapes, so
the batch (and the support and query sets) are bounded by `max_batch`, which the manifest
records. The `executorch` package is an extra: `pip install 'mtl-deploy[executorch]'`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from mtl_deploy.atomic import INTEGRITY, atomic_directory, sha256_file
from mtl_deploy.errors import InputError, MtlDeployError, first_line
from mtl_deploy.exporters.adapter import INPUTS, OUTPUT, plan_adapter
from mtl_deploy.exporters.onnx_graph import TupleOutputs
from mtl_deploy.exporters.report import ExportReport
from mtl_deploy.exporters.source import ExportSource
from mtl_deploy.exporters.verify import ParityError, prove_parity, random_inputs, torch_outputs
from mtl_deploy.models.inputs import BATCH

PROGRAM, ADAPTER_PROGRAM = "model.pte", "adapter.pte"
RUNTIME = "executorch (xnnpack)"
DEFAULT_MAX_BATCH = 256


def require_executorch() -> None:
    if importlib.util.find_spec("executorch") is None:
        raise InputError("--format executorch needs ExecuTorch: pip install 'mtl-deploy[executorch]'")


@contextlib.contextmanager
def _quiet():
    """ExecuTorch's imports, lowering and runtime print notices (torchao kernels this CPU
    build lacks, deprecations, the CPU probe of its C++ runtime on stderr) that say nothing
    about the user's model."""
    with contextlib.ExitStack() as stack, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("torchao", "executorch", "torch._export", "torch.utils._pytree"):
            logger = logging.getLogger(name)
            stack.callback(logger.setLevel, logger.level)
            logger.setLevel(logging.ERROR)
        sys.stderr.flush()
        saved = os.dup(2)
        stack.callback(os.close, saved)
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        stack.callback(os.dup2, saved, 2)
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        yield


def _lower(module: torch.nn.Module, example: tuple[torch.Tensor, ...], dynamic_shapes: tuple, path: Path) -> None:
    """torch.export, then XNNPACK lowering, then the ExecuTorch program at `path`."""
    try:
        with _quiet():
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower
            program = torch.export.export(module, example, dynamic_shapes=dynamic_shapes)
            lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    except Exception as err:  # export and lowering raise many types; the user needs the first line
        raise MtlDeployError(f"executorch export failed: {first_line(err, 300)}") from err
    path.write_bytes(lowered.buffer)


def load_program(path: Path) -> Callable[..., list[torch.Tensor]]:
    """The program at `path` in ExecuTorch's runtime, as a callable on tensors; a file that
    does not load is one MtlDeployError."""
    require_executorch()
    try:
        with _quiet():
            from executorch.runtime import Runtime
            method = Runtime.get().load_program(str(path)).load_method("forward")
    except Exception as err:  # the runtime raises RuntimeError and its own types
        raise MtlDeployError(f"{path} does not load as an ExecuTorch program ({first_line(err, 160)})") from None

    def run(*inputs: torch.Tensor) -> list[torch.Tensor]:
        try:
            return list(method.execute([t.contiguous() for t in inputs]))
        except RuntimeError as err:
            raise MtlDeployError(f"{path.name} refused the inputs (shapes {[tuple(t.shape) for t in inputs]}; its "
                                 f"largest batch is the manifest's max_batch): {first_line(err, 160)}") from None
    return run


def bounded_batches(batch_sizes, max_batch: int) -> list[int]:
    """The library's proof batches for a program of at most `max_batch` rows: those that
    fit, and the bound itself."""
    return sorted({*(b for b in batch_sizes if b < max_batch), max_batch})


def _max_batch(batch_sizes, max_batch: int | None) -> int:
    largest = max(batch_sizes)
    bound = max(DEFAULT_MAX_BATCH, largest) if max_batch is None else max_batch
    if isinstance(bound, bool) or not isinstance(bound, int) or bound < max(2, largest):
        raise InputError(f"max_batch must be an integer of at least 2 and of the largest proof batch ({largest}), "
                         f"got {bound!r}")
    return bound


def _program_manifest(path: Path, max_batch: int) -> dict:
    return {"artifact": path.name, "artifact_format": "executorch", "model_sha256": sha256_file(path),
            "max_batch": max_batch, "executorch_version": importlib.metadata.version("executorch"),
            "backend": "xnnpack", "integrity": INTEGRITY}


def export_executorch(source: ExportSource, out_dir: str | Path, *, atol: float, rtol: float, batch_sizes,
                      max_batch: int | None = None) -> ExportReport:
    """`model.pte` + `manifest.json`, proved in ExecuTorch at `batch_sizes`."""
    require_executorch()
    model, names, signature = source.model, source.task_names, source.signature
    if signature.symbolic_axes:
        raise InputError(f"--format executorch takes inputs whose only varying axis is the batch; this model's "
                         f"inputs also vary along {', '.join(signature.symbolic_axes)}: export it as onnx or pt2")
    bound = _max_batch(batch_sizes, max_batch)
    wrapper = TupleOutputs(model, names, signature).eval()
    batch = torch.export.Dim(BATCH, max=bound)
    shapes = (tuple({0: batch} for _ in signature.specs),)
    with atomic_directory(out_dir, "export", source.paths) as staging:
        path = staging / PROGRAM
        _lower(wrapper, tuple(random_inputs(model, 4).values()), shapes, path)
        program = load_program(path)

        def run(feeds: dict) -> dict:
            outputs = program(*[torch.from_numpy(feeds[name]) for name in signature.names])
            return {name: value.numpy() for name, value in zip(names, outputs)}
        parity = prove_parity({RUNTIME: run}, torch_outputs(model, names), source.input_sets, batch_sizes, atol, rtol)
        if not parity.passed:
            raise ParityError(parity.failure_message() + "; no export was written")
        manifest = {**source.base_manifest(), **source.io_manifest(), **_program_manifest(path, bound),
                    "parity": parity.to_dict()}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportReport(Path(out_dir), manifest, parity)


def adapter_program_runner(path: Path) -> dict:
    """The adapter program as the one runner of an adapter proof (`prove_adapter`)."""
    program = load_program(path)

    def run(feeds: dict) -> dict:
        (pred,) = program(*[torch.from_numpy(feeds[name]) for name in INPUTS])
        return {OUTPUT: pred.numpy()}
    return {RUNTIME: run}


def export_executorch_adapter(source: ExportSource, out_dir: str | Path, *, atol: float, rtol: float,
                              max_batch: int | None = None) -> ExportReport:
    """`adapter.pte` + `manifest.json`: support and query sets of up to `max_batch` rows."""
    require_executorch()
    plan = plan_adapter(source)
    bound = _max_batch([2], max_batch)
    support_x, _, support_y, query_x = plan.example
    with atomic_directory(out_dir, "export", plan.source.paths) as staging:
        path = staging / ADAPTER_PROGRAM
        _lower(plan.graph, (support_x, support_y, query_x), plan.input_shapes(plan.dims(bound)), path)
        report = plan.prove(adapter_program_runner(path), atol, rtol)
        if not report.passed:
            raise ParityError(report.failure_message() + "; no export was written")
        manifest = {**plan.manifest(path, report), **_program_manifest(path, bound)}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportReport(Path(out_dir), manifest, report)
