"""`export`: a model or checkpoint in, a verified export directory out.

The directory holds `model.onnx` (one file, manifest essentials in its metadata) and
`manifest.json` (inputs, outputs, tasks, opset, versions, hashes, parity report). It is
assembled under a temporary name, proved against PyTorch, and only then renamed into
place: a failed proof leaves no artifact that claims to be good.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
import onnxruntime
import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from mtl_deploy import checkpoint
from mtl_deploy.atomic import atomic_directory, sha256_file
from mtl_deploy.data.loaders import load_inputs
from mtl_deploy.errors import InputError
from mtl_deploy.exporters.adapter import ADAPTER_ATOL, export_adapter
from mtl_deploy.exporters.graphs import multi_output_graph, routed_graph
from mtl_deploy.exporters.onnx_graph import BATCH_DIM, trace_onnx
from mtl_deploy.exporters.report import ExportReport
from mtl_deploy.exporters.verify import (DEFAULT_ATOL, DEFAULT_BATCH_SIZES, DEFAULT_RTOL, ParityError,
                                      check_graph, graph_runners, prove_parity, random_inputs)
from mtl_deploy.version import __version__

FORMATS = ("onnx", "adapter")
DEFAULT_OPSET = 20
MODEL_FILE, MANIFEST = "model.onnx", "manifest.json"
EXPORT_FORMAT = "mtl_deploy.export"


def weights_hash(model: nn.Module) -> str:
    """sha256 of the model's state as safetensors bytes: equal to a checkpoint's content hash."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return hashlib.sha256(safetensors_bytes(state)).hexdigest()


def _resolve_model(model_or_path) -> tuple[nn.Module, torch.Tensor | None, dict | None]:
    if isinstance(model_or_path, nn.Module):
        return model_or_path.eval(), None, None
    loaded = checkpoint.read(model_or_path)
    return loaded.model, loaded.sample_inputs, loaded.manifest


def _value_info(value: onnx.ValueInfoProto) -> dict:
    tensor = value.type.tensor_type
    return {"name": value.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
            "shape": [d.dim_param or d.dim_value for d in tensor.shape.dim]}


def export(model_or_path, out_dir: str | Path, *, format: str = "onnx", opset: int = DEFAULT_OPSET,
           atol: float | None = None, rtol: float | None = None, batch_sizes=DEFAULT_BATCH_SIZES,
           sample_inputs: torch.Tensor | str | Path | None = None, routed: bool = False) -> ExportReport:
    """Export a model (or the checkpoint at a path) to `out_dir`, verified before it lands.

    `format="adapter"`: the on-device adaptation graph of a meta-learned model instead.
    `routed=True`: inputs `x` and `task_id` (int64 per row), one output `prediction` holding
    each row's own task output (every head must have the same output size).
    Tolerances default to atol 1e-5 (1e-4 for adapters) and rtol 1e-4.
    `sample_inputs`: real input rows (a tensor, or an .npz/.csv file) for the parity proof;
    by default the rows stored in the checkpoint. Raises `ParityError` when any output of the graph differs from PyTorch beyond
    |a - e| <= atol + rtol * |e| in any runtime, input set or batch size.
    """
    if format not in FORMATS:
        raise InputError(f"unknown export format {format!r}; this version exports: {', '.join(FORMATS)}")
    atol = (ADAPTER_ATOL if format == "adapter" else DEFAULT_ATOL) if atol is None else atol
    rtol = DEFAULT_RTOL if rtol is None else rtol
    newest = onnx.defs.onnx_opset_version()
    if not 18 <= opset <= newest:
        raise InputError(f"opset {opset} is out of range; use 18 to {newest} (default {DEFAULT_OPSET})")
    if atol < 0 or rtol < 0:
        raise InputError("tolerances must be >= 0")
    if format == "adapter":
        return export_adapter(model_or_path, out_dir, opset=opset, atol=atol, rtol=rtol)
    model, stored_inputs, source_manifest = _resolve_model(model_or_path)
    tasks = model.tasks
    names = [t.name for t in tasks]
    if isinstance(sample_inputs, (str, Path)):
        sample_inputs = load_inputs(sample_inputs, model.input_shape, names)
    real = sample_inputs if sample_inputs is not None else stored_inputs
    if real is not None and tuple(real.shape[1:]) != tuple(model.input_shape):
        raise InputError(f"sample inputs have row shape {tuple(real.shape[1:])}, the model takes {model.input_shape}")
    graph = routed_graph(model, names) if routed else multi_output_graph(model, names)
    proto = trace_onnx(graph.wrapper, graph.example, graph.input_names, graph.output_names, opset)
    essentials = {
        "format": EXPORT_FORMAT, "library_version": __version__, "opset": opset, "weights_sha256": weights_hash(model),
        "routed": routed, "inputs": [_value_info(v) for v in proto.graph.input],
        "outputs": [_value_info(v) for v in proto.graph.output],
        "tasks": {t.name: {"output": graph.output_names[0] if routed else t.name, "kind": t.kind, "out_dim": t.out_dim,
                           "values": "values" if t.kind == "regression" else "logits", **({"id": i} if routed else {})}
                  for i, t in enumerate(tasks)},
    }
    proto.producer_name, proto.producer_version = "mtl_deploy", __version__
    onnx.helper.set_model_props(proto, {f"mtl_deploy.{k}": v if isinstance(v, str) else json.dumps(v)
                                        for k, v in essentials.items()})
    with atomic_directory(out_dir) as staging:
        onnx.save_model(proto, staging / MODEL_FILE, save_as_external_data=False)
        check_graph(staging / MODEL_FILE)
        input_sets = {"random": random_inputs(model, 64, seed=1).numpy()}
        if real is not None:
            input_sets["real"] = real.float().numpy()
        parity = prove_parity(graph_runners(staging / MODEL_FILE, proto), graph.expected, input_sets,
                              batch_sizes, atol, rtol, graph.make_feeds)
        if not parity.passed:
            raise ParityError(parity.failure_message() + "; no export was written")
        manifest = {
            **essentials,
            "artifact": MODEL_FILE, "batch_axis": BATCH_DIM,
            "model_sha256": sha256_file(staging / MODEL_FILE),
            "torch_version": torch.__version__, "onnx_version": onnx.__version__,
            "onnxruntime_version": onnxruntime.__version__,
            "architecture": model.config(), "parameters": sum(p.numel() for p in model.parameters()),
            "checkpoint": source_manifest and {"content_hash": source_manifest["content_hash"],
                                               "info": source_manifest.get("info", {})},
            "parity": parity.to_dict(),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportReport(Path(out_dir), manifest, parity)
