"""Re-verify an export directory that already exists: its files are intact, its graph is
valid, and it still computes what the model computes.

Nothing the export's own manifest says about the proof is trusted: tolerances are the
library's defaults or the caller's, batch sizes are the library's, and a proof that
compared nothing is an error. The manifest's hashes catch corruption; the re-run proof is
what catches a graph that was edited and re-hashed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx

from mtl_deploy import checkpoint as checkpoints
from mtl_deploy.atomic import sha256_file
from mtl_deploy.errors import InputError, MtlDeployError
from mtl_deploy.exporters.adapter import ADAPTER_ATOL, HALVES, adapter_runners, prove_adapter
from mtl_deploy.exporters.graphs import multi_output_graph, routed_graph
from mtl_deploy.exporters.onnx_graph import TASK_ID_NAME
from mtl_deploy.exporters.source import proof_input_sets, sample_feeds, weights_hash
from mtl_deploy.exporters.torch_export import ARTIFACTS, RUNTIMES, reload_artifact, torch_runner
from mtl_deploy.exporters.executorch_export import RUNTIME as EXECUTORCH
from mtl_deploy.exporters.executorch_export import adapter_program_runner, bounded_batches, load_program
from mtl_deploy.exporters.quantize import int8_feeds, prove_int8
from mtl_deploy.exporters.runtimes import DEFAULT_RUNTIMES, graph_runners, parse_runtimes, reference_runner
from mtl_deploy.exporters.verify import (DEFAULT_ATOL, DEFAULT_BATCH_SIZES, ParityError, ParityReport, check_graph,
                                      proof_tolerances, prove_parity, torch_outputs)
from mtl_deploy.meta.adapt import fewshot_model
from mtl_deploy.models.inputs import PROOF_LENGTHS, InputSpec, Signature, signature_of
from mtl_deploy.runtime.predictor import artifact_path, read_export_manifest
from mtl_deploy.runtime.session import resolve_device
from mtl_deploy.runtime.task_file import state_spec

MAX_FEATURES = 1 << 20  # rows of random inputs are built from the graph's shape: bound it


def verify_export(export_dir: str | Path, checkpoint: str | Path | None = None,
                  atol: float | None = None, rtol: float | None = None, trust: Iterable[str] = (),
                  device: str = "cpu", runtimes: str | Iterable[str] | None = None) -> ParityReport:
    """Check hashes and graph; then re-prove parity in `runtimes` (ONNX exports: any of
    onnxruntime, reference, openvino, tract; default the first two): against PyTorch with
    `checkpoint` (whose trunk factory may come from the packages in `trust`), else against
    the ONNX reference evaluator. An int8 graph beside the export is proved against ONNX
    Runtime's int8 outputs in the other runtimes. Raises on any failure.
    ONNX Runtime runs on `device` ("auto", "cpu", "cuda", "tensorrt", as `Predictor`); the
    CPU unless asked, so that a re-proof reproduces the export's own numbers anywhere."""
    device = resolve_device(device)
    asked = runtimes is not None
    runtimes = parse_runtimes(DEFAULT_RUNTIMES if runtimes is None else runtimes)
    export_dir = Path(export_dir)
    manifest = read_export_manifest(export_dir)
    adapter = manifest["format"] == "mtl_deploy.adapter"
    atol, rtol = proof_tolerances(atol, rtol, ADAPTER_ATOL if adapter else DEFAULT_ATOL)
    model_path = artifact_path(export_dir, manifest)
    if sha256_file(model_path) != manifest.get("model_sha256"):
        raise MtlDeployError(f"{model_path} does not match the hash in its manifest: it was changed or is corrupt")
    loaded = None if checkpoint is None else checkpoints.read(checkpoint, trust)
    if loaded is not None and weights_hash(loaded.model) != manifest.get("weights_sha256"):
        raise InputError(f"checkpoint {checkpoint} holds other weights than this export was made from"
                         + ("" if manifest.get("weights_sha256") else " (the export records no weights hash: "
                            "export it again)"))
    format = manifest.get("artifact_format", "onnx")
    if format != "onnx" and (device != "cpu" or asked):
        raise InputError(f"{export_dir} is an export in the {format} format, proved in its own runtime on the CPU; "
                         "--device and --runtimes apply to ONNX exports")
    if format != "onnx" and loaded is None:
        raise InputError(f"{export_dir} is an export in the {format} format: its parity is proved against the "
                         f"PyTorch model, so give the checkpoint: mtl-deploy verify {export_dir} --checkpoint CKPT")
    if format == "executorch" and adapter:
        report = _prove_adapter_against(loaded, manifest, adapter_program_runner(model_path), atol, rtol)
    elif format != "onnx":
        report = _verify_program(model_path, format, manifest, loaded, atol, rtol)
    elif adapter:
        report = _verify_adapter(model_path, manifest, loaded, atol, rtol, device, runtimes)
    else:
        report = _verify_onnx(model_path, manifest, loaded, atol, rtol, device, runtimes)
    if not report.passed:
        raise ParityError(report.failure_message())
    return report


def _checked_graph(model_path: Path, manifest: dict):
    proto = check_graph(model_path)
    graph_io = ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output])
    manifest_io = ([i.get("name") for i in manifest["inputs"]], [o.get("name") for o in manifest.get("outputs", [])])
    if graph_io != manifest_io:
        raise MtlDeployError(f"the graph's inputs/outputs {graph_io} differ from the manifest's {manifest_io}")
    return proto


def _graph_signature(proto, manifest: dict) -> Signature:
    """The graph's own inputs (past `task_id`) as a signature: names, dtypes and axes from
    the graph, integer ranges from the manifest (a wrong range can only fail the proof)."""
    ranges = {i.get("name"): i.get("range") for i in manifest["inputs"] if isinstance(i, dict)}
    specs = []
    for value in proto.graph.input:
        if value.name == TASK_ID_NAME:
            continue
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        shape = tuple(d.dim_param or d.dim_value for d in tensor.shape.dim)
        fixed = [d for d in shape[1:] if isinstance(d, int)]
        if any(d < 1 for d in fixed) or int(np.prod(fixed)) * max(PROOF_LENGTHS) > MAX_FEATURES:
            raise MtlDeployError(f"the graph's input {value.name!r} has no usable row shape {list(shape)}")
        low, high = ranges.get(value.name) or (0, 2)
        if not (isinstance(low, int) and isinstance(high, int) and low < high):
            raise MtlDeployError(f"the manifest's range for input {value.name!r} is not [low, high); export again")
        specs.append(InputSpec(value.name, dtype, shape, low, high))
    return Signature(tuple(specs), "dict")


def _row_shape(proto, index: int = 0) -> list[int]:
    """A value's shape past its first axis, from the graph itself (fixed sizes only)."""
    dims = proto.graph.input[index].type.tensor_type.shape.dim[1:]
    shape = [d.dim_value for d in dims]
    if any(d.dim_param or d.dim_value < 1 for d in dims) or int(np.prod(shape)) > MAX_FEATURES:
        raise MtlDeployError(f"the graph's input {proto.graph.input[index].name!r} has no fixed row shape")
    return shape


def _compared_runtimes(runtimes: tuple[str, ...], loaded) -> tuple[str, ...]:
    """Without a checkpoint the reference evaluator is what the others are compared with."""
    if loaded is not None:
        return runtimes
    others = tuple(name for name in runtimes if name != "reference")
    if not others:
        raise InputError("without --checkpoint the ONNX reference evaluator is what the runtimes are compared "
                         "with: name at least one other runtime")
    return others


def _verify_onnx(model_path: Path, manifest: dict, loaded, atol: float, rtol: float, device: str,
                 runtimes: tuple[str, ...]) -> ParityReport:
    proto = _checked_graph(model_path, manifest)
    runners = graph_runners(model_path, proto, device, _compared_runtimes(runtimes, loaded))
    if loaded is None:
        signature = _graph_signature(proto, manifest)
        sizes = dict.fromkeys(signature.symbolic_axes, PROOF_LENGTHS[0])
        input_sets = {"random": {name: value.numpy() for name, value in signature.random(64, 0, sizes).items()}}
        report = prove_parity(runners, reference_runner(proto), input_sets, DEFAULT_BATCH_SIZES, atol, rtol,
                              int8_feeds(manifest), against="onnx.reference")
    else:
        names = list(manifest["tasks"])
        plan = routed_graph(loaded.model, names) if manifest.get("routed") else multi_output_graph(loaded.model, names)
        input_sets = _input_sets(loaded)
        report = prove_parity(runners, plan.expected, input_sets, DEFAULT_BATCH_SIZES, atol, rtol, plan.make_feeds)
    if isinstance(manifest.get("int8"), dict):
        int8 = _int8_report(model_path.parent, manifest, input_sets, runtimes, atol, rtol)
        if int8 is not None:
            report.absorb(int8, "int8")
    return report


def _int8_report(export_dir: Path, manifest: dict, input_sets: dict, runtimes, atol: float, rtol: float
                 ) -> ParityReport | None:
    """The int8 graph beside the export: its hash (when the manifest records one), the
    checker, then its proof in the other runtimes against ONNX Runtime's int8 outputs."""
    path = artifact_path(export_dir, manifest, manifest["int8"].get("artifact"))
    recorded = manifest["int8"].get("sha256")
    if recorded is not None and sha256_file(path) != recorded:
        raise MtlDeployError(f"{path} does not match the hash in its manifest: it was changed or is corrupt")
    return prove_int8(path, check_graph(path), manifest, input_sets, runtimes, atol, rtol)


def _input_sets(loaded) -> dict[str, dict[str, np.ndarray]]:
    names = [t.name for t in loaded.model.tasks]
    return proof_input_sets(loaded.model, sample_feeds(loaded.model, loaded.sample_inputs, names))


def _verify_program(model_path: Path, format: str, manifest: dict, loaded, atol: float,
                    rtol: float) -> ParityReport:
    """A pt2 / AOTI / TorchScript / ExecuTorch program has no second runtime to compare
    with: its proof is against the PyTorch model."""
    names = list(manifest["tasks"])
    if format == "executorch":
        program, runtime = load_program(model_path), EXECUTORCH
    elif format in ARTIFACTS:
        program, runtime = reload_artifact(format, model_path), RUNTIMES[format]
    else:
        raise MtlDeployError(f"{model_path.parent}: unknown artifact format {format!r} in its manifest; export again")
    runner = torch_runner(program, names, signature_of(loaded.model).names)
    bound, batches = manifest.get("max_batch"), DEFAULT_BATCH_SIZES  # an ExecuTorch program has a bound
    if isinstance(bound, int) and bound >= 1:
        batches = bounded_batches(batches, bound)
    return prove_parity({runtime: runner}, torch_outputs(loaded.model, names), _input_sets(loaded), batches, atol, rtol)


def _prove_adapter_against(loaded, manifest: dict, runners: dict, atol: float, rtol: float) -> ParityReport:
    """An adapter's runners against adaptation in PyTorch, with the manifest's steps and rate."""
    model = fewshot_model(loaded.model).eval()
    return prove_adapter(runners, model, manifest["steps"], manifest["lr"] if manifest.get("head_lr") is None else None,
                         loaded.sample_inputs, atol, rtol)


def _verify_adapter(model_path: Path, manifest: dict, loaded, atol: float, rtol: float, device: str,
                    runtimes: tuple[str, ...]) -> ParityReport:
    """The one graph, and its two halves (adapt, predict) where the export has them: hashes,
    checker, then parity of both ways of predicting."""
    proto = _checked_graph(model_path, manifest)
    halves = manifest.get("state")
    if halves is not None:
        state_spec(manifest)  # a corrupt state section is one line, before any of it is used
    for half in HALVES if halves else ():
        path = artifact_path(model_path.parent, manifest, halves.get(half))
        if sha256_file(path) != halves.get(f"{half}_sha256"):
            raise MtlDeployError(f"{path} does not match the hash in its manifest: it was changed or is corrupt")
    wanted = runtimes if loaded is not None else (*_compared_runtimes(runtimes, None), "reference")
    runners = adapter_runners(model_path.parent, model_path.name, halves, device, wanted)
    if loaded is not None:
        return _prove_adapter_against(loaded, manifest, runners, atol, rtol)
    reference = runners.pop("onnx.reference")
    row_shape = _row_shape(proto)
    kind = manifest.get("task", {}).get("kind")
    width = proto.graph.input[1].type.tensor_type.shape.dim[1]
    report = ParityReport(atol, rtol, [], ["random"], sorted(runners), against="onnx.reference")
    rng = np.random.default_rng(0)
    for ways, shots, queries in ((2, 1, 1), (3, 2, 5), (3, 4, 17)):
        classes = width.dim_value or ways
        rows = classes * shots if kind != "regression" else shots * 4
        support_y = (np.eye(classes, dtype=np.float32)[np.arange(rows) % classes] if kind != "regression"
                     else rng.standard_normal((rows, classes)).astype(np.float32))
        feeds = {"support_x": rng.standard_normal((rows, *row_shape)).astype(np.float32), "support_y": support_y,
                 "query_x": rng.standard_normal((queries, *row_shape)).astype(np.float32)}
        want = reference(feeds)
        for runtime, run in runners.items():
            for name, values in run(feeds).items():
                report.record(runtime, name, values, want[name],
                              f"{runtime} vs onnx.reference, {rows} support rows, {queries} queries")
            report.comparisons += 1
        report.batch_sizes.append(queries)
    return report
