"""The ONNX export of a multi-task model: `model.onnx` (one file, manifest essentials in
its metadata, every task an output, or routed by `task_id`) plus `manifest.json`, proved
in ONNX Runtime and the reference evaluator (and any other of `runtimes.py`'s runtimes
asked for) before it is renamed into place."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnxruntime

from mtl_deploy.atomic import INTEGRITY, atomic_directory, sha256_file
from mtl_deploy.exporters.graphs import multi_output_graph, routed_graph
from mtl_deploy.exporters.onnx_graph import trace_onnx
from mtl_deploy.exporters.report import ExportReport
from mtl_deploy.exporters.source import ExportSource
from mtl_deploy.exporters.runtimes import DEFAULT_RUNTIMES, graph_runners, runtime_versions
from mtl_deploy.exporters.verify import ParityError, check_graph, prove_parity
from mtl_deploy.version import __version__

MODEL_FILE, MANIFEST = "model.onnx", "manifest.json"


def _value_info(value: onnx.ValueInfoProto, ranges: dict[str, list[int]] | None = None) -> dict:
    """A graph input or output as the manifest lists it; integer inputs also carry the
    range of values the model takes."""
    tensor = value.type.tensor_type
    entry = {"name": value.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
             "shape": [d.dim_param or d.dim_value for d in tensor.shape.dim]}
    return {**entry, "range": ranges[value.name]} if ranges and value.name in ranges else entry


def export_onnx(source: ExportSource, out_dir: str | Path, *, opset: int, atol: float, rtol: float, batch_sizes,
                routed: bool = False, finish=None, runtimes=DEFAULT_RUNTIMES) -> ExportReport:
    """`finish(staging_dir, manifest)`, when given, adds to the directory before it lands
    (int8 quantization does); it may raise to cancel the whole export."""
    model, names = source.model, source.task_names
    graph = routed_graph(model, names) if routed else multi_output_graph(model, names)
    proto = trace_onnx(graph.wrapper, graph.example, graph.input_names, graph.output_names, opset, graph.dynamic_shapes)
    ranges = {spec.name: [spec.low, spec.high] for spec in source.signature.specs if spec.integer}
    base = source.base_manifest()
    essentials = {
        "format": base["format"], "library_version": __version__, "opset": opset,
        "weights_sha256": base["weights_sha256"], "routed": routed,
        "inputs": [_value_info(v, ranges) for v in proto.graph.input], "outputs": [_value_info(v) for v in proto.graph.output],
        "tasks": {name: {**spec, **({"output": graph.output_names[0], "id": i} if routed else {})}
                  for i, (name, spec) in enumerate(base["tasks"].items())},
    }
    proto.producer_name, proto.producer_version = "mtl_deploy", __version__
    onnx.helper.set_model_props(proto, {f"mtl_deploy.{k}": v if isinstance(v, str) else json.dumps(v)
                                        for k, v in essentials.items()})
    with atomic_directory(out_dir, "export", source.paths) as staging:
        onnx.save_model(proto, staging / MODEL_FILE, save_as_external_data=False)
        check_graph(staging / MODEL_FILE)
        runners = graph_runners(staging / MODEL_FILE, proto, runtimes=runtimes)
        parity = prove_parity(runners, graph.expected, source.input_sets, batch_sizes, atol, rtol, graph.make_feeds)
        if not parity.passed:
            raise ParityError(parity.failure_message() + "; no export was written")
        manifest = {**base, **essentials, "artifact": MODEL_FILE, "model_sha256": sha256_file(staging / MODEL_FILE),
                    "onnx_version": onnx.__version__, "onnxruntime_version": onnxruntime.__version__,
                    "runtime_versions": runtime_versions(runtimes), "parity": parity.to_dict(), "integrity": INTEGRITY}
        if finish is not None:
            finish(staging, manifest)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportReport(Path(out_dir), manifest, parity)
