"""A Triton Inference Server model repository for the onnxruntime backend:
`REPO/<name>/config.pbtxt` and `REPO/<name>/1/model.onnx` (with its manifest), everything in
the config read off the verified export's manifest. Triton batches on its own axis, so
inputs and outputs are declared without the batch dimension."""

from __future__ import annotations

import re
from pathlib import Path

from mtl_deploy.atomic import atomic_directory
from mtl_deploy.errors import InputError
from mtl_deploy.exporters.onnx_export import export_onnx
from mtl_deploy.exporters.report import ExportReport
from mtl_deploy.exporters.source import ExportSource

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
GENERIC_NAMES = {"checkpoint", "ckpt", "model", "export", "out", "output", "adapted"}
TRITON_TYPES = {"float32": "TYPE_FP32", "float64": "TYPE_FP64", "int64": "TYPE_INT64", "int32": "TYPE_INT32"}
MAX_BATCH_SIZE = 1024


def _tensor(entry: dict) -> str:
    dims = [-1 if isinstance(d, str) else d for d in entry["shape"][1:]]  # a named axis (sequence) varies
    if not dims:  # a per-row scalar (task_id): Triton wants a dimension, the graph has none
        return (f'  {{ name: "{entry["name"]}" data_type: {TRITON_TYPES[entry["dtype"]]} dims: [ 1 ] '
                f"reshape: {{ shape: [ ] }} }}")
    return f'  {{ name: "{entry["name"]}" data_type: {TRITON_TYPES[entry["dtype"]]} dims: [ {", ".join(map(str, dims))} ] }}'


def model_config(name: str, manifest: dict, threads: int = 1, max_queue_delay_us: int = 100) -> str:
    """config.pbtxt text for the export described by `manifest`."""
    inputs = ",\n".join(_tensor(entry) for entry in manifest["inputs"])
    outputs = ",\n".join(_tensor(entry) for entry in manifest["outputs"])
    return (f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: {MAX_BATCH_SIZE}\n'
            f"input [\n{inputs}\n]\noutput [\n{outputs}\n]\n"
            f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}\n"
            "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
            f'parameters {{ key: "intra_op_thread_count" value: {{ string_value: "{threads}" }} }}\n'
            'parameters { key: "inter_op_thread_count" value: { string_value: "1" } }\n')


def triton_model_name(name: str | None, model_or_path) -> str:
    """`name` checked as a plain model name (it is written into config.pbtxt and used as a
    directory), or by default the checkpoint's directory name, or its parent's where that
    name says nothing ("checkpoint", "model", ...)."""
    if name is not None:
        if not MODEL_NAME.fullmatch(name):
            raise InputError(f"invalid Triton model name {name[:80]!r}; use letters, digits, '_', '.' or '-' "
                             "(at most 128, starting with a letter or digit)")
        return name
    if not isinstance(model_or_path, (str, Path)):
        return "model"
    path = Path(model_or_path).resolve()
    for candidate in (path.name, path.parent.name):
        cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", candidate).lstrip("._-")[:128]
        if cleaned and cleaned.lower() not in GENERIC_NAMES:
            return cleaned
    return "model"


def export_triton(source: ExportSource, repository: str | Path, name: str, **onnx_options) -> ExportReport:
    """Write (or replace) model `name` (see `triton_model_name`) in the repository, its ONNX
    export verified first."""
    with atomic_directory(Path(repository) / name, "triton model", source.paths) as staging:
        report = export_onnx(source, staging / "1", **onnx_options)
        (staging / "config.pbtxt").write_text(model_config(name, report.manifest))
    return ExportReport(Path(repository) / name, report.manifest, report.parity)
