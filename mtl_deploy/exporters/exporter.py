"""`export`: a model or checkpoint in, a verified export directory out.

Every format is assembled under a temporary name, proved against PyTorch, and only then
renamed into place: a failed proof leaves no artifact that claims to be good.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import onnx
import torch
from torch import nn

from mtl_deploy.errors import InputError
from mtl_deploy.exporters.adapter import ADAPTER_ATOL, export_adapter
from mtl_deploy.exporters.executorch_export import bounded_batches, export_executorch, export_executorch_adapter
from mtl_deploy.exporters.onnx_export import export_onnx
from mtl_deploy.exporters.quantize import add_int8
from mtl_deploy.exporters.report import ExportReport
from mtl_deploy.exporters.runtimes import DEFAULT_RUNTIMES, parse_runtimes
from mtl_deploy.exporters.source import export_source
from mtl_deploy.exporters.torch_export import ARTIFACTS, export_torch
from mtl_deploy.atomic import check_output
from mtl_deploy.trust import trusting
from mtl_deploy.exporters.triton import export_triton, triton_model_name
from mtl_deploy.models.fewshot import FewShotModel
from mtl_deploy.models.foreign import ForeignModel
from mtl_deploy.exporters.verify import DEFAULT_ATOL, DEFAULT_BATCH_SIZES, proof_batch_sizes, proof_tolerances

ONNX_FORMATS = ("onnx", "adapter", "triton")
FORMATS = (*ONNX_FORMATS, *ARTIFACTS, "executorch")
DEFAULT_OPSET = 20


def export(model_or_path, out_dir: str | Path, *, format: str = "onnx", opset: int = DEFAULT_OPSET,
           atol: float | None = None, rtol: float | None = None, batch_sizes=DEFAULT_BATCH_SIZES,
           sample_inputs: torch.Tensor | str | Path | None = None, routed: bool = False,
           quantize: str | None = None, max_quantization_error: float = 0.05,
           triton_name: str | None = None, trust: Iterable[str] = (), example_inputs=None,
           output_names: list[str] | None = None, runtimes: str | Iterable[str] | None = None,
           max_batch: int | None = None) -> ExportReport:
    """Export a model (or the checkpoint at a path) to `out_dir`, verified before it lands.

    format: `onnx` (default), `adapter` (the on-device adaptation graph of a meta-learned
    model), `pt2` (torch.export), `aoti` (AOTInductor package), `torchscript`,
    `executorch` (`model.pte`, or `adapter.pte` for a few-shot model; batches of at most
    `max_batch` rows, default 256 or the largest proof batch).
    `triton`: a Triton model repository at `out_dir` holding model `triton_name` (default:
    the checkpoint directory's name), its ONNX export verified as for `onnx`.
    `routed=True` (onnx, triton): inputs `x` and `task_id` (int64 per row), one output `prediction`
    holding each row's own task output (every head must have the same output size).
    `quantize="int8"` (onnx): also `model.int8.onnx`, with its size, latency and output
    change in the manifest; refused (nothing written) past `max_quantization_error`.
    Tolerances default to atol 1e-5 (1e-4 for adapters) and rtol 1e-4.
    `sample_inputs`: real input rows (a tensor, or an .npz/.csv file) for the parity proof;
    by default the rows stored in the checkpoint. Raises `ParityError` when any output
    differs from PyTorch beyond |a - e| <= atol + rtol * |e| in any runtime, input set or
    batch size. `runtimes` (onnx, triton, adapter): where the proof runs, any of onnxruntime,
    reference, openvino, tract (default onnxruntime and reference; see `exporters.runtimes`);
    the manifest records each one's version. `trust`: packages whose trunk factory a
    checkpoint may import (see `load`).

    Any other `nn.Module` exports as it is with `example_inputs` (a tensor, tuple or dict of
    tensors) when its forward returns a tensor, a tuple or a dict of tensors; `output_names`
    names a tuple's outputs (formats onnx, triton, pt2, aoti, torchscript).
    """
    if isinstance(model_or_path, nn.Module) and not hasattr(model_or_path, "tasks"):
        if example_inputs is None:
            raise InputError(f"{type(model_or_path).__name__} is not an mtl_deploy model: give example_inputs "
                             "(and output_names) to export it as it is, or mtl_deploy.wrap it")
        if routed or format == "adapter":
            raise InputError("--routed and --format adapter need an mtl_deploy model; wrap the module first")
        model_or_path = ForeignModel(model_or_path.eval(), example_inputs, output_names)
    elif example_inputs is not None or output_names is not None:
        raise InputError("example_inputs and output_names are for a module mtl_deploy did not build; "
                         "this model knows its own")
    with trusting(trust):
        return _export(model_or_path, out_dir, format, opset, atol, rtol, batch_sizes, sample_inputs, routed,
                       quantize, max_quantization_error, triton_name, runtimes, max_batch)


def _export(model_or_path, out_dir, format, opset, atol, rtol, batch_sizes, sample_inputs, routed, quantize,
            max_quantization_error, triton_name, runtimes, max_batch) -> ExportReport:
    if format not in FORMATS:
        raise InputError(f"unknown export format {format!r}; this version exports: {', '.join(FORMATS)}")
    if routed and format not in ("onnx", "triton"):
        raise InputError("--routed applies to --format onnx or triton only")
    if quantize and format != "onnx":
        raise InputError("--quantize applies to --format onnx only")
    if quantize not in (None, "int8"):
        raise InputError(f"unknown quantization {quantize!r}; use int8")
    if max_batch is not None and format != "executorch":
        raise InputError("--max-batch applies to --format executorch only (other formats take any batch)")
    if runtimes is not None and format not in ONNX_FORMATS:
        raise InputError(f"--runtimes applies to the ONNX formats ({', '.join(ONNX_FORMATS)}); a {format} export is "
                         "proved in PyTorch's own runtime")
    runtimes = parse_runtimes(DEFAULT_RUNTIMES if runtimes is None else runtimes)
    adapter_atol = proof_tolerances(atol, rtol, ADAPTER_ATOL)[0]
    atol, rtol = proof_tolerances(atol, rtol, ADAPTER_ATOL if format == "adapter" else DEFAULT_ATOL)
    if batch_sizes is DEFAULT_BATCH_SIZES and isinstance(max_batch, int) and max_batch >= 2:
        batch_sizes = bounded_batches(batch_sizes, max_batch)  # a smaller program is proved up to its bound
    batch_sizes = proof_batch_sizes(batch_sizes)
    if not (isinstance(max_quantization_error, (int, float)) and 0 <= max_quantization_error < float("inf")):
        raise InputError(f"max_quantization_error must be a finite number >= 0, got {max_quantization_error!r}")
    newest = onnx.defs.onnx_opset_version()
    if not 18 <= opset <= newest:
        raise InputError(f"opset {opset} is out of range; use 18 to {newest} (default {DEFAULT_OPSET})")
    inputs = tuple(p for p in (model_or_path, sample_inputs) if isinstance(p, (str, Path)))
    if format == "triton":
        triton_name = triton_model_name(triton_name, model_or_path)
        check_output(Path(out_dir) / triton_name, "triton model", inputs)
    else:
        check_output(out_dir, "export", inputs)
    if format == "adapter":
        return export_adapter(model_or_path, out_dir, opset=opset, atol=atol, rtol=rtol, sample_inputs=sample_inputs,
                              runtimes=runtimes)
    source = export_source(model_or_path, sample_inputs)
    if format == "executorch":
        if isinstance(source.model, FewShotModel):
            return export_executorch_adapter(source, out_dir, atol=adapter_atol, rtol=rtol,
                                             max_batch=max_batch)
        return export_executorch(source, out_dir, atol=atol, rtol=rtol, batch_sizes=batch_sizes, max_batch=max_batch)
    if format == "onnx":
        finish = None if quantize is None else (
            lambda staging, manifest: manifest.update(int8=add_int8(staging, manifest, source.input_sets,
                                                                    max_quantization_error, runtimes, atol, rtol)))
        return export_onnx(source, out_dir, opset=opset, atol=atol, rtol=rtol, batch_sizes=batch_sizes, routed=routed,
                           finish=finish, runtimes=runtimes)
    if format == "triton":
        return export_triton(source, out_dir, triton_name, opset=opset, atol=atol, rtol=rtol, batch_sizes=batch_sizes,
                             routed=routed, runtimes=runtimes)
    return export_torch(source, out_dir, format, atol=atol, rtol=rtol, batch_sizes=batch_sizes)
