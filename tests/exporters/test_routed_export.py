"""Routed graphs: one batch mixes tasks; row i equals task_id[i]'s PyTorch output."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

import mtl_deploy
from mtl_deploy.data import TaskSpec
from mtl_deploy.errors import InputError
from mtl_deploy.exporters import verify_export
from mtl_deploy.models import MultiTaskModel

TASKS = [TaskSpec("north", "regression", 3), TaskSpec("south", "regression", 3), TaskSpec("east", "multiclass", 3)]


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    torch.manual_seed(0)
    model = MultiTaskModel((6,), TASKS, {"type": "mlp", "hidden": [8]}).eval()
    root = tmp_path_factory.mktemp("routed")
    mtl_deploy.save(model, root / "ckpt")
    report = mtl_deploy.export(root / "ckpt", root / "export", routed=True)
    return model, root, report


def test_mixed_batch_equals_per_task_outputs_row_by_row(routed):
    model, root, report = routed
    assert report.parity.passed
    session = ort.InferenceSession(str(root / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(11, 6)
    task_id = np.array([2, 0, 1, 1, 0, 2, 2, 0, 1, 0, 2], dtype=np.int64)
    (got,) = session.run(["prediction"], {"x": x.numpy(), "task_id": task_id})
    with torch.no_grad():
        outputs = model(x)
    for row, task in enumerate(task_id):
        np.testing.assert_allclose(got[row], outputs[TASKS[task].name][row].numpy(), atol=1e-5, rtol=1e-4)
    assert report.manifest["tasks"]["east"]["id"] == 2


def test_routed_export_reverifies(routed):
    _, root, _ = routed
    assert verify_export(root / "export", root / "ckpt").passed
    assert verify_export(root / "export").passed


def test_heads_of_different_sizes_route_zero_padded(tmp_path):
    from mtl_deploy.runtime import Predictor

    tasks = [TaskSpec("value", "regression", 1), TaskSpec("kind", "multiclass", 4), TaskSpec("flag", "binary")]
    torch.manual_seed(0)
    model = MultiTaskModel((5,), tasks, {"type": "mlp", "hidden": [8]}).eval()
    report = mtl_deploy.export(model, tmp_path / "r", routed=True)
    assert report.parity.passed and report.manifest["outputs"][0]["shape"] == ["batch", 4]
    x = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    mixed = Predictor(tmp_path / "r").predict(x, task_ids=[0, 1, 2])
    with torch.no_grad():
        outputs = model(torch.from_numpy(x))
    np.testing.assert_allclose(mixed[0, :1], outputs["value"][0].numpy(), atol=1e-5)
    np.testing.assert_array_equal(mixed[0, 1:], 0.0)
    np.testing.assert_allclose(mixed[1], outputs["kind"][1].numpy(), atol=1e-5)
    assert Predictor(tmp_path / "r").predict(x, task="flag").shape == (3, 1)


def test_runtime_predictor_routes_rows(routed):
    from mtl_deploy.runtime import Predictor

    model, root, _ = routed
    predictor = Predictor(root / "export")
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    with torch.no_grad():
        outputs = model(torch.from_numpy(x))
    np.testing.assert_allclose(predictor.predict(x, task="south"), outputs["south"].numpy(), atol=1e-5, rtol=1e-4)
    mixed = predictor.predict(x, task_ids=[0, 2, 1, 0])
    np.testing.assert_allclose(mixed[1], outputs["east"][1].numpy(), atol=1e-5, rtol=1e-4)
    with pytest.raises(InputError, match="either task"):
        predictor.predict(x)
    with pytest.raises(InputError, match=r"in \[0, 2\]"):
        predictor.predict(x, task_ids=[0, 5, 1, 0])


def test_predict_command_routes_rows_by_a_task_id_column(routed, tmp_path):
    from typer.testing import CliRunner

    from mtl_deploy.cli import app

    model, root, _ = routed
    x = np.random.default_rng(4).standard_normal((4, 6)).astype(np.float32)
    ids = [2, 0, 1, 2]
    lines = [",".join([*(f"f{i}" for i in range(6)), "task"])]
    lines += [",".join([*(f"{v:.6f}" for v in row), str(t)]) for row, t in zip(x, ids)]
    (tmp_path / "mixed.csv").write_text("\n".join(lines) + "\n")
    done = CliRunner().invoke(app, ["predict", str(root / "export"), "--input", str(tmp_path / "mixed.csv"),
                                    "--task-ids", "task", "--output", str(tmp_path / "p.csv")])
    assert done.exit_code == 0, done.output
    table = (tmp_path / "p.csv").read_text().splitlines()
    assert table[0] == "task,prediction,probability"
    with torch.no_grad():
        outputs = model(torch.from_numpy(np.round(x, 6)))
    assert [row.split(",")[0] for row in table[1:]] == ["east", "north", "south", "east"]
    assert int(table[1].split(",")[1]) == int(outputs["east"][0].argmax())
    np.testing.assert_allclose(float(table[2].split(",")[1]), float(outputs["north"][1, 0]), rtol=1e-4)
    bad = CliRunner().invoke(app, ["predict", str(root / "export"), "--input", str(tmp_path / "mixed.csv"),
                                   "--task-ids", "nope"])
    assert bad.exit_code == 2 and "neither an .npy file nor a column" in bad.output
