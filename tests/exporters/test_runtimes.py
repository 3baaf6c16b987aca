"""Exports proved in every runtime: ONNX Runtime, the ONNX reference evaluator, OpenVINO at
float32 and tract with pinned input shapes, on the demo's multi-output graph and its int8
twin, a routed graph and adapter graphs; and the graphs carry nothing that trips one of
them (stale intermediate shapes, `allowzero` reshapes, an opset other than the one asked)."""

import importlib.util
import json
import shutil

import numpy as np
import onnx
import pytest
import torch

import mtl_deploy
from mtl_deploy.data import TaskSpec
from mtl_deploy.errors import InputError, MtlDeployError
from mtl_deploy.exporters import verify_export
from mtl_deploy.exporters.runtimes import RUNTIMES, graph_runners, parse_runtimes
from mtl_deploy.meta.train import meta_train_and_save
from mtl_deploy.models import MultiTaskModel
from tests.meta.test_adapt_and_export import brief_config

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'mtl-deploy[openvino]')")
pytest.importorskip("tract", reason="tract is not installed (pip install 'mtl-deploy[tract]')")

EVERY = ",".join(RUNTIMES)
REPORTED = ["onnx.reference", "onnxruntime", "openvino (f32)", "tract (pinned shapes)"]


@pytest.fixture(scope="module")
def exports(checkpoint_dir, tmp_path_factory):
    """name -> (export directory, its checkpoint), each exported with its proof in every runtime."""
    root = tmp_path_factory.mktemp("runtimes")
    made = {"demo": (root / "demo", checkpoint_dir)}
    mtl_deploy.export(checkpoint_dir, root / "demo", quantize="int8", runtimes=EVERY)
    torch.manual_seed(0)
    tasks = [TaskSpec("north", "regression", 3), TaskSpec("south", "regression", 3), TaskSpec("east", "multiclass", 3)]
    mtl_deploy.save(MultiTaskModel((6,), tasks, {"type": "mlp", "hidden": [8]}).eval(), root / "routed-ckpt")
    mtl_deploy.export(root / "routed-ckpt", root / "routed", routed=True, runtimes=EVERY)
    made["routed"] = (root / "routed", root / "routed-ckpt")
    for algorithm in ("protonet", "anil"):
        meta_train_and_save(brief_config(algorithm), root / f"{algorithm}-ckpt", progress=False)
        mtl_deploy.export(root / f"{algorithm}-ckpt", root / algorithm, format="adapter", runtimes=EVERY)
        made[algorithm] = (root / algorithm, root / f"{algorithm}-ckpt")
    return made


@pytest.mark.parametrize("name", ["demo", "routed", "protonet", "anil"])
def test_every_runtime_proves_the_export_and_the_manifest_names_them(exports, name):
    export_dir, checkpoint = exports[name]
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert manifest["parity"]["passed"] and manifest["parity"]["runtimes"] == REPORTED
    assert set(manifest["runtime_versions"]) == set(RUNTIMES)
    against_torch = verify_export(export_dir, checkpoint, runtimes=EVERY)
    against_reference = verify_export(export_dir, runtimes=EVERY)
    for report in (against_torch, against_reference):
        assert report.passed and report.comparisons > 0
        assert all(o.max_abs_error <= 2e-5 for o in report.outputs.values()), report.outputs
    assert against_torch.runtimes == REPORTED and against_reference.against == "onnx.reference"


def test_the_int8_graph_is_proved_in_every_runtime_against_onnxruntime_int8(exports):
    export_dir, checkpoint = exports["demo"]
    manifest = json.loads((export_dir / "manifest.json").read_text())
    int8 = manifest["int8"]
    assert int8["parity"]["passed"] and int8["parity"]["against"] == "onnxruntime"
    assert int8["parity"]["runtimes"] == ["onnx.reference", "openvino (f32)", "tract (pinned shapes)"]
    report = verify_export(export_dir, checkpoint, runtimes=EVERY)
    int8_rows = [name for name in report.outputs if name.endswith("(int8 vs onnxruntime)")]
    assert len(int8_rows) == len(manifest["tasks"])


def test_an_edited_int8_graph_fails_its_hash(exports, tmp_path):
    export_dir, _ = exports["demo"]
    copy = tmp_path / "demo"
    shutil.copytree(export_dir, copy)
    with open(copy / "model.int8.onnx", "ab") as graph:
        graph.write(b"\0")
    with pytest.raises(MtlDeployError, match="model.int8.onnx does not match the hash"):
        verify_export(copy, runtimes="onnxruntime,reference")


@pytest.mark.parametrize("name", ["demo", "routed", "protonet", "anil"])
def test_graphs_carry_no_intermediate_shapes_and_no_needless_allowzero(exports, name):
    export_dir, _ = exports[name]
    for path in export_dir.glob("*.onnx"):
        proto = onnx.load(str(path))
        assert not proto.graph.value_info, path.name
        for node in proto.graph.node:
            if node.op_type == "Reshape":
                assert all(not (a.name == "allowzero" and a.i) for a in node.attribute), (path.name, node.name)


def test_openvino_is_proved_at_float32_not_at_its_default(exports):
    """On a CPU with bf16 units OpenVINO's default precision is bf16, which moves outputs far
    past any tolerance without an error; the proof's runner pins f32."""
    import openvino

    export_dir, _ = exports["demo"]
    path = export_dir / "model.onnx"
    runners = graph_runners(path, onnx.load(str(path)), runtimes=["onnxruntime", "openvino"])
    feeds = {"x": np.random.default_rng(0).standard_normal((64, 50)).astype(np.float32)}
    want = runners["onnxruntime"](feeds)
    got = runners["openvino (f32)"](feeds)
    assert max(float(np.abs(got[k] - want[k]).max()) for k in want) <= 1e-5
    default = openvino.Core().compile_model(str(path), "CPU")
    if "bfloat16" in str(default.get_property("INFERENCE_PRECISION_HINT")):
        results = default(feeds)
        drift = max(float(np.abs(results[default.output(k)] - want[k]).max()) for k in want)
        assert drift > 1e-3


def test_opset_18_is_honoured_in_every_graph(checkpoint_dir, exports, tmp_path):
    out = tmp_path / "opset18"
    mtl_deploy.export(checkpoint_dir, out, opset=18, quantize="int8")
    _, protonet = exports["protonet"]
    mtl_deploy.export(protonet, tmp_path / "adapter18", format="adapter", opset=18)
    paths = [*out.glob("*.onnx"), *(tmp_path / "adapter18").glob("*.onnx")]
    assert len(paths) == 5
    for path in paths:
        proto = onnx.load(str(path))
        assert [(o.domain, o.version) for o in proto.opset_import] == [("", 18)], path.name
        for node in proto.graph.node:
            assert onnx.defs.get_schema(node.op_type, 18).since_version <= 18
        onnx.checker.check_model(proto, full_check=True)
    assert json.loads((out / "manifest.json").read_text())["opset"] == 18


def test_runtime_names_are_checked_and_a_missing_one_names_its_extra(monkeypatch):
    assert parse_runtimes(" ONNXRuntime, tract,tract ") == ("onnxruntime", "tract")
    with pytest.raises(InputError, match="unknown runtime 'trt'; use any of onnxruntime, reference, openvino, tract"):
        parse_runtimes("onnxruntime,trt")
    with pytest.raises(InputError, match="no runtime given"):
        parse_runtimes(" , ")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(InputError, match=r"runtime openvino is not installed: pip install 'mtl-deploy\[openvino\]'"):
        parse_runtimes("openvino")
