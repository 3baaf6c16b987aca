"""ONNX export: one self-contained standard graph with a symbolic batch, proved equal to
PyTorch, and nothing left behind when the proof fails."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import mtl_deploy
from mtl_deploy.data import DEFAULT_TASKS, synthetic_family
from mtl_deploy.errors import InputError, MtlDeployError
from mtl_deploy.exporters import ParityError, onnx_export, verify_export
from mtl_deploy.models import MultiTaskModel


def test_export_directory_holds_one_graph_and_a_manifest(export_dir):
    assert sorted(p.name for p in export_dir.iterdir()) == ["manifest.json", "model.onnx"]
    proto = onnx.load(str(export_dir / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert {node.domain for node in proto.graph.node} <= {"", "ai.onnx"}
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 20)]
    assert all(not init.external_data for init in proto.graph.initializer)
    for value in [*proto.graph.input, *proto.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [o.name for o in proto.graph.output] == [t.name for t in DEFAULT_TASKS]


def test_manifest_essentials_are_in_the_graph_metadata(export_dir):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    props = {p.key: p.value for p in onnx.load(str(export_dir / "model.onnx")).metadata_props}
    assert json.loads(props["mtl_deploy.tasks"]) == manifest["tasks"]
    assert json.loads(props["mtl_deploy.inputs"]) == manifest["inputs"]
    assert props["mtl_deploy.weights_sha256"] == manifest["weights_sha256"]
    assert manifest["parity"]["passed"] and manifest["parity"]["runtimes"] == ["onnx.reference", "onnxruntime"]
    assert manifest["parity"]["batch_sizes"] == [1, 37, 256]
    assert manifest["parity"]["inputs"] == ["random", "real"]


@pytest.mark.parametrize("batch", [1, 37])
def test_loaded_checkpoint_equals_onnxruntime_on_unseen_inputs(checkpoint_dir, export_dir, batch):
    model = mtl_deploy.load(checkpoint_dir)
    x = synthetic_family(n_rows=batch, seed=0, split="holdout").x  # rows the export never saw
    session = ort.InferenceSession(str(export_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x.numpy()})))
    with torch.no_grad():
        want = model(x)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value.numpy(), atol=1e-5, rtol=1e-4)


def test_convnet_model_exports_with_parity(tmp_path):
    torch.manual_seed(0)
    model = MultiTaskModel((1, 8, 8), list(DEFAULT_TASKS), {"type": "conv", "channels": [4, 4]}).eval()
    report = mtl_deploy.export(model, tmp_path / "conv", batch_sizes=(1, 5))
    assert report.parity.passed
    assert report.manifest["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 1, 8, 8]}]


def test_parity_failure_writes_nothing_and_keeps_the_old_export(checkpoint_dir, tmp_path, monkeypatch):
    out = tmp_path / "export"
    mtl_deploy.export(checkpoint_dir, out)
    before = (out / "manifest.json").read_text()
    real_runners = onnx_export.graph_runners

    def drifting_runners(path, proto, **options):
        runners = real_runners(path, proto, **options)
        run = runners["onnxruntime"]
        runners["onnxruntime"] = lambda feeds: {k: v + 1e-3 for k, v in run(feeds).items()}
        return runners

    monkeypatch.setattr(onnx_export, "graph_runners", drifting_runners)
    with pytest.raises(ParityError, match=r"parity failed: output '\w+' differs by up to 0.001.*onnxruntime"):
        mtl_deploy.export(checkpoint_dir, out)
    assert (out / "manifest.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_bad_export_arguments(checkpoint_dir, tmp_path):
    with pytest.raises(InputError, match="unknown export format 'tflite'"):
        mtl_deploy.export(checkpoint_dir, tmp_path / "e", format="tflite")
    with pytest.raises(InputError, match="opset 9 is out of range"):
        mtl_deploy.export(checkpoint_dir, tmp_path / "e", opset=9)
    with pytest.raises(InputError, match="row shape"):
        mtl_deploy.export(checkpoint_dir, tmp_path / "e", sample_inputs=torch.zeros(3, 7))


def test_verify_detects_a_changed_graph_and_a_foreign_checkpoint(checkpoint_dir, export_dir, fitted, tmp_path):
    assert verify_export(export_dir, checkpoint_dir).passed
    assert verify_export(export_dir).runtimes == ["onnxruntime"]
    other = MultiTaskModel(fitted.model.input_shape, fitted.model.tasks, fitted.model.trunk.config())
    mtl_deploy.save(other, tmp_path / "other")
    with pytest.raises(InputError, match="other weights"):
        verify_export(export_dir, tmp_path / "other")
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for f in export_dir.iterdir():
        (tampered / f.name).write_bytes(f.read_bytes())
    (tampered / "model.onnx").write_bytes((export_dir / "model.onnx").read_bytes()[:-10])
    with pytest.raises(MtlDeployError, match="does not match the hash"):
        verify_export(tampered)


def test_exported_graphs_carry_no_intermediate_shapes(export_dir):
    """Only inputs and outputs have shapes: stale symbolic intermediate shapes break
    runtimes that pin the input shapes."""
    import onnx

    model = onnx.load(export_dir / "model.onnx")
    assert len(model.graph.value_info) == 0
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the batch axis stays symbolic
