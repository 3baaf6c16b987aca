"""The command line end to end with Typer's CliRunner: the happy path, and every bad input
gets one line naming the problem, exit code 2 (usage) or 1 (failure), and no traceback."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mtl_deploy import checkpoint
from mtl_deploy.cli import app
from mtl_deploy.exporters import onnx_export
from mtl_deploy.mtl import joint

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def assert_one_line_error(code, output, expected_code, *fragments):
    assert code == expected_code, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_train_export_verify_inspect(tmp_path):
    code, out = invoke("train", "--preset", "synthetic-related", "--epochs", "20", "--out", tmp_path / "ckpt")
    assert code == 0, out
    assert "segment" in out and "accuracy" in out
    code, out = invoke("export", tmp_path / "ckpt", "--format", "onnx", "--out", tmp_path / "export", "--opset", "20")
    assert code == 0, out
    assert out.count("pass") == 5 and "FAIL" not in out
    code, out = invoke("verify", tmp_path / "export", "--checkpoint", tmp_path / "ckpt")
    assert code == 0 and "verified" in out
    code, out = invoke("inspect", tmp_path / "export")
    assert code == 0 and "opset 20" in out and "['batch', 50]" in out and "model.onnx" in out
    code, out = invoke("inspect", tmp_path / "ckpt")
    assert code == 0 and "parameters: 2952" in out and "weights.safetensors" in out


def test_every_command_help_shows_an_example():
    commands = ["demo", "train", "adapt", "evaluate", "analyze", "export", "verify", "inspect", "predict"]
    assert sorted(commands) == sorted(c.name or c.callback.__name__ for c in app.registered_commands)
    for command in commands:
        code, out = invoke(command, "--help")
        assert code == 0 and "Example: mtl-deploy " + command in out


def write_config(path, data_section):
    path.write_text(json.dumps({"data": data_section, "train": {"epochs": 2}}))
    return path


def write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header), *(",".join(map(str, r)) for r in rows)]) + "\n")
    return path


def test_unknown_column_and_task(tmp_path):
    csv_file = write_csv(tmp_path / "d.csv", ["a", "b", "price"], [[1, 2, 3]] * 10)
    config = write_config(tmp_path / "c.json", {"source": "csv", "path": str(csv_file),
                                                "tasks": [{"name": "prize", "kind": "regression"}]})
    assert_one_line_error(*invoke("train", config, "--out", tmp_path / "o"), 2, "prize", "the header has")
    npz = tmp_path / "d.npz"
    np.savez(npz, x=np.ones((10, 3)), price=np.ones(10))
    config = write_config(tmp_path / "n.json", {"source": "npz", "path": str(npz),
                                                "tasks": [{"name": "churn", "kind": "binary"}]})
    assert_one_line_error(*invoke("train", config, "--out", tmp_path / "o"), 2, "churn", "the archive has")


def test_nan_in_the_data(tmp_path):
    csv_file = write_csv(tmp_path / "d.csv", ["a", "price"], [[1, 2]] * 5 + [["nan", 1]] + [[1, 2]] * 4)
    config = write_config(tmp_path / "c.json", {"source": "csv", "path": str(csv_file),
                                                "tasks": [{"name": "price", "kind": "regression"}]})
    assert_one_line_error(*invoke("train", config, "--out", tmp_path / "o"), 2, "NaN or inf in 1 row")


def test_bad_config_files(tmp_path):
    assert_one_line_error(*invoke("train", tmp_path / "missing.json"), 2, "does not exist")
    (tmp_path / "bad.json").write_text("{ nope")
    assert_one_line_error(*invoke("train", tmp_path / "bad.json"), 2, "not valid JSON")
    (tmp_path / "extra.json").write_text(json.dumps({"train": {"epoch": 3}}))
    assert_one_line_error(*invoke("train", tmp_path / "extra.json"), 2, "unknown key(s) ['epoch'] in [train]")
    assert_one_line_error(*invoke("train", "--preset", "nope"), 2, "unknown preset 'nope'")


def test_wrong_feature_count(checkpoint_dir, tmp_path):
    np.savez(tmp_path / "rows.npz", x=np.ones((4, 7), dtype=np.float32))
    assert_one_line_error(*invoke("export", checkpoint_dir, "--out", tmp_path / "e", "--data", tmp_path / "rows.npz"),
                          2, "7 features", "the model takes [50]")


def test_missing_and_corrupt_checkpoint(checkpoint_dir, tmp_path):
    assert_one_line_error(*invoke("export", tmp_path / "nope", "--out", tmp_path / "e"), 2, "does not exist")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in checkpoint_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "weights.safetensors").write_bytes(b"garbage")
    assert_one_line_error(*invoke("export", broken, "--out", tmp_path / "e"), 1, "corrupt")
    assert not (tmp_path / "e").exists()
    assert_one_line_error(*invoke("verify", tmp_path / "nope"), 2, "does not exist")
    assert_one_line_error(*invoke("inspect", tmp_path / "nope"), 2, "does not exist")


def test_unwritable_output_directory(checkpoint_dir, tmp_path):
    (tmp_path / "a_file").write_text("x")
    assert_one_line_error(*invoke("export", checkpoint_dir, "--out", tmp_path / "a_file" / "e"), 1, "cannot write")
    assert_one_line_error(*invoke("export", checkpoint_dir, "--out", tmp_path / "a_file"), 2, "not a directory")


def test_parity_mismatch_fails_the_export(checkpoint_dir, tmp_path, monkeypatch):
    real_runners = onnx_export.graph_runners

    def drifting_runners(path, proto, **options):
        runners = real_runners(path, proto, **options)
        run = runners["onnx.reference"]
        runners["onnx.reference"] = lambda feeds: {k: v * 1.01 + 1e-3 for k, v in run(feeds).items()}
        return runners

    monkeypatch.setattr(onnx_export, "graph_runners", drifting_runners)
    assert_one_line_error(*invoke("export", checkpoint_dir, "--out", tmp_path / "e"), 1, "parity failed",
                          "no export was written")
    assert not (tmp_path / "e").exists()


def test_ctrl_c_during_training_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "ckpt"
    assert invoke("train", "--preset", "synthetic-related", "--epochs", "3", "--out", out)[0] == 0
    before = checkpoint.read_manifest(out)
    real_evaluate, epochs_seen = joint.evaluate, []

    def ctrl_c_at_epoch_5(*args, **kwargs):  # Ctrl-C arrives in the middle of training
        epochs_seen.append(1)
        if len(epochs_seen) == 5:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(joint, "evaluate", ctrl_c_at_epoch_5)
    code, output = invoke("train", "--preset", "synthetic-related", "--seed", "9", "--out", out)
    assert code == 130 and "interrupted" in output and "Traceback" not in output
    assert len(epochs_seen) == 5
    assert checkpoint.read_manifest(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


@pytest.mark.parametrize("args", [["export"], ["train", "--epochs", "0"], ["nosuchcommand"]])
def test_usage_errors_exit_2(args):
    assert invoke(*args)[0] == 2


def test_missing_export_extra_is_named(checkpoint_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    for module in [m for m in __import__("sys").modules if m.startswith("mtl_deploy.export")]:
        monkeypatch.delitem(__import__("sys").modules, module)
    code, output = invoke("export", checkpoint_dir, "--out", tmp_path / "e")
    assert_one_line_error(code, output, 1, "onnxruntime is not installed", "mtl-deploy[export]")
