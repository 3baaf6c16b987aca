"""int8 beside the ONNX export: measured, bounded, and refused whole when too lossy."""

import json

import numpy as np
import onnx
from typer.testing import CliRunner

from mtl_deploy.cli import app
from mtl_deploy.exporters.quantize import output_change

runner = CliRunner()


def test_int8_is_measured_and_recorded(checkpoint_dir, tmp_path):
    result = runner.invoke(app, ["export", str(checkpoint_dir), "--out", str(tmp_path / "e"), "--quantize", "int8",
                                 "--max-quantization-error", "0.5"])
    assert result.exit_code == 0, result.output
    assert "int8: model.int8.onnx is" in result.output
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    report = manifest["int8"]
    assert report["bytes"]["int8"] < report["bytes"]["float32"]
    assert set(report["output_change"]) == set(manifest["tasks"]) and report["max_error"] == 0.5
    proto = onnx.load(str(tmp_path / "e" / "model.int8.onnx"))
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    assert "MatMulInteger" in {n.op_type for n in proto.graph.node}


def test_too_lossy_int8_writes_nothing(checkpoint_dir, tmp_path):
    result = runner.invoke(app, ["export", str(checkpoint_dir), "--out", str(tmp_path / "e"), "--quantize", "int8",
                                 "--max-quantization-error", "0"])
    assert result.exit_code == 1 and "int8 changes output" in result.output and "no export was written" in result.output
    assert not (tmp_path / "e").exists()


def test_output_change_measures():
    float32 = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert output_change(float32, float32, "regression") == 0.0
    assert np.isclose(output_change(float32, float32 + 0.1, "regression"), 0.1 / float32.std())
    logits = np.array([[2.0, 0.0], [0.0, 2.0]])
    assert output_change(logits, logits[:, ::-1], "multiclass") == 1.0
    assert output_change(np.array([[1.0], [-1.0]]), np.array([[1.0], [1.0]]), "binary") == 0.5
