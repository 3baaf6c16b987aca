"""The runtime predictor: same numbers as PyTorch, clear errors, and no torch import."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import mtl_deploy
from mtl_deploy.errors import InputError
from mtl_deploy.runtime import Predictor


def test_predictions_match_pytorch(checkpoint_dir, export_dir):
    model = mtl_deploy.load(checkpoint_dir)
    x = np.random.default_rng(1).standard_normal((5, 50)).astype(np.float32)
    predictor = Predictor(export_dir, threads=1)
    with torch.no_grad():
        want = {k: v.numpy() for k, v in model(torch.from_numpy(x)).items()}
    got = predictor.predict(x)
    assert sorted(got) == sorted(want)
    for task in want:
        np.testing.assert_allclose(got[task], want[task], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(predictor.predict(x[0], task="segment"), want["segment"][:1], atol=1e-5, rtol=1e-4)


def test_bad_inputs_name_the_problem(export_dir, tmp_path):
    predictor = Predictor(export_dir)
    with pytest.raises(InputError, match=r"rows of shape \[7\]; this model takes \[50\]"):
        predictor.predict(np.zeros((2, 7)))
    with pytest.raises(InputError, match="NaN or inf"):
        predictor.predict(np.full((2, 50), np.nan))
    with pytest.raises(InputError, match="unknown task 'nope'"):
        predictor.predict(np.zeros((2, 50)), task="nope")
    with pytest.raises(InputError, match="no manifest.json"):
        Predictor(tmp_path)


def test_runtime_imports_without_torch(export_dir):
    code = ("import sys; sys.modules['torch'] = None; import numpy as np; from mtl_deploy.runtime import Predictor; "
            f"print(Predictor({str(export_dir)!r}).predict(np.zeros((3, 50)), task='price').shape)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(3, 1)"


def test_predict_command_reads_and_writes_files(export_dir, tmp_path):
    from typer.testing import CliRunner

    from mtl_deploy.cli import app

    rows = np.random.default_rng(2).standard_normal((4, 50)).astype(np.float32)
    np.savetxt(tmp_path / "rows.csv", rows, delimiter=",", header=",".join(f"f{i}" for i in range(50)), comments="")
    np.save(tmp_path / "rows.npy", rows)
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(export_dir), "--input", str(tmp_path / "rows.csv"),
                                 "--output", str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    header = (tmp_path / "out.csv").read_text().splitlines()[0]
    assert header == "price,demand,risk,segment,segment_probability,churn,churn_probability"
    result = runner.invoke(app, ["predict", str(export_dir), "--input", str(tmp_path / "rows.npy"), "--task", "churn",
                                 "--logits"])
    assert result.exit_code == 0 and result.output.startswith("churn\n")
    want = Predictor(export_dir).predict(rows, task="churn")
    np.testing.assert_allclose([float(v) for v in result.output.split()[1:]], want[:, 0], rtol=1e-5)
    bad = runner.invoke(app, ["predict", str(export_dir), "--input", str(tmp_path / "missing.npy")])
    assert bad.exit_code == 2 and bad.output.startswith("error: ") and "does not exist" in bad.output


def test_predict_writes_labels_and_probabilities(export_dir, tmp_path):
    """JSON gives a class task's label and probability; printed output is a table."""
    import json

    from typer.testing import CliRunner

    from mtl_deploy.cli import app
    from mtl_deploy.runtime import Predictor

    predictor = Predictor(export_dir)
    width = predictor.row_shape[0]
    x = np.random.default_rng(0).standard_normal((5, width)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    raw = predictor.predict(x)
    runner = CliRunner()
    done = runner.invoke(app, ["predict", str(export_dir), "--input", str(tmp_path / "x.npy"),
                               "--output", str(tmp_path / "p.json")])
    assert done.exit_code == 0, done.output
    rows = json.loads((tmp_path / "p.json").read_text())
    assert len(rows) == 5
    for name, spec in predictor.tasks.items():
        if spec["kind"] == "multiclass":
            assert [r[name] for r in rows] == raw[name].argmax(1).tolist()
            exp = np.exp(raw[name] - raw[name].max(1, keepdims=True))
            np.testing.assert_allclose([r[f"{name}_probability"] for r in rows], (exp / exp.sum(1, keepdims=True)).max(1),
                                       rtol=1e-5)
        elif spec["kind"] == "binary":
            assert [r[name] for r in rows] == (raw[name][:, 0] > 0).astype(int).tolist()
    printed = runner.invoke(app, ["predict", str(export_dir), "--input", str(tmp_path / "x.npy"), "--logits"])
    assert printed.exit_code == 0 and len(printed.output.strip().splitlines()) == 6  # a header and five rows
    assert "[[" not in printed.output
