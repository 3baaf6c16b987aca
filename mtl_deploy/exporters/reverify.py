"""Re-verify an export directory that already exists: its files are intact, its graph is
valid, and (given the checkpoint it came from) it still matches PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mtl_deploy import checkpoint as checkpoints
from mtl_deploy.atomic import sha256_file
from mtl_deploy.errors import InputError, MtlDeployError
from mtl_deploy.exporters.onnx_export import MANIFEST, MODEL_FILE
from mtl_deploy.exporters.source import weights_hash
from mtl_deploy.exporters.graphs import mixed_task_ids, multi_output_graph, routed_graph
from mtl_deploy.exporters.onnx_graph import INPUT_NAME, TASK_ID_NAME
from mtl_deploy.exporters.verify import (ParityError, ParityReport, check_graph, graph_runners, prove_parity,
                                      random_inputs, single_input)


def read_export_manifest(export_dir: str | Path) -> dict:
    export_dir = Path(export_dir)
    if not (export_dir / MANIFEST).is_file():
        raise InputError(f"{export_dir} is not an export directory: it has no {MANIFEST}")
    try:
        return json.loads((export_dir / MANIFEST).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MtlDeployError(f"{export_dir / MANIFEST} is corrupt ({err}); export again") from None


def verify_export(export_dir: str | Path, checkpoint: str | Path | None = None,
                  atol: float | None = None, rtol: float | None = None) -> ParityReport:
    """Check hashes and graph; then ONNX Runtime against PyTorch (with `checkpoint`) or,
    without it, against the ONNX reference evaluator. Raises on any failure."""
    export_dir = Path(export_dir)
    manifest = read_export_manifest(export_dir)
    model_path = export_dir / manifest.get("artifact", MODEL_FILE)
    if not model_path.is_file():
        raise MtlDeployError(f"{model_path} is missing; export again")
    if sha256_file(model_path) != manifest.get("model_sha256"):
        raise MtlDeployError(f"{model_path} does not match the hash in its manifest: it was changed or is corrupt")
    proto = check_graph(model_path)
    graph_io = ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output])
    manifest_io = ([i["name"] for i in manifest["inputs"]], [o["name"] for o in manifest["outputs"]])
    if graph_io != manifest_io:
        raise MtlDeployError(f"the graph's inputs/outputs {graph_io} differ from the manifest's {manifest_io}")
    stored = manifest.get("parity", {})
    atol = stored.get("atol", 1e-5) if atol is None else atol
    rtol = stored.get("rtol", 1e-4) if rtol is None else rtol
    batch_sizes = stored.get("batch_sizes", [1, 37, 256])
    runners = graph_runners(model_path, proto)
    routed = manifest.get("routed", False)
    if checkpoint is None:
        row_shape = manifest["inputs"][0]["shape"][1:]
        rows = np.random.default_rng(0).standard_normal((64, *row_shape)).astype(np.float32)
        reference = runners.pop("onnx.reference")
        make_feeds = single_input
        if routed:
            def make_feeds(x):
                return {INPUT_NAME: x, TASK_ID_NAME: mixed_task_ids(len(x), len(manifest["tasks"]))}
        report = prove_parity(runners, reference, {"random": rows}, batch_sizes, atol, rtol, make_feeds)
    else:
        loaded = checkpoints.read(checkpoint)
        if weights_hash(loaded.model) != manifest.get("weights_sha256"):
            raise InputError(f"checkpoint {checkpoint} holds other weights than this export was made from")
        input_sets = {"random": random_inputs(loaded.model, 64, seed=1).numpy()}
        if loaded.sample_inputs is not None:
            input_sets["real"] = loaded.sample_inputs.numpy()
        names = list(manifest["tasks"])
        plan = routed_graph(loaded.model, names) if routed else multi_output_graph(loaded.model, names)
        report = prove_parity(runners, plan.expected, input_sets, batch_sizes, atol, rtol, plan.make_feeds)
    if not report.passed:
        raise ParityError(report.failure_message())
    return report
