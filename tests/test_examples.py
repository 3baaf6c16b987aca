"""The examples run as a user runs them, and an export serves with onnxruntime and numpy
alone (torch made unimportable)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtl_deploy.cli import app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BLOCK_TORCH = "import sys, runpy; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


def run(*args):
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("script, args, expected", [
    ("quickstart.py", [], "max abs error vs ONNX Runtime"),
    ("csv_data.py", [], "'churn': {'accuracy'"),
    ("few_shot_adaptation.py", [50], "export parity passed: True"),
    ("own_model.py", [], "proved on random, sequence 17, random, sequence 5 at batches [1, 3, 16]"),
    ("pretrained_backbone_fewshot.py", [], "finetune   5-way 2-shot accuracy 1.00; adapter parity True"),
    pytest.param("edge_runtimes.py", [], "proved at batches [1, 37, 64]", marks=pytest.mark.skipif(
        any(importlib.util.find_spec(p) is None for p in ("openvino", "tract", "executorch")),
        reason="needs mtl-deploy[openvino,tract,executorch]")),
])
def test_example_runs(script, args, expected, tmp_path):
    assert expected in run(EXAMPLES / script, tmp_path, *args)


def test_distributed_example_under_torchrun(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(EXAMPLES / "distributed_training.py"), str(tmp_path), "40"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "step 40: validation loss" in result.stdout and "on 2 process(es)" in result.stdout
    assert (tmp_path / "maml" / "curves.png").is_file()


def test_demo_leaves_a_checkpoint_and_an_export_served_without_torch(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "related tasks: multi-task better on" in result.output
    assert "Serving latency" in result.output and "FAIL" not in result.output
    assert (tmp_path / "checkpoint" / "weights.safetensors").is_file()
    assert (tmp_path / "export" / "model.onnx").is_file()
    out = run("-c", BLOCK_TORCH, EXAMPLES / "serve_with_onnxruntime.py", tmp_path / "export", 3)
    assert "segment    multiclass (3, 4)" in out


def test_the_torch_block_really_blocks(tmp_path):
    script = tmp_path / "uses_torch.py"
    script.write_text("import torch\n")
    result = subprocess.run([sys.executable, "-c", BLOCK_TORCH, script], capture_output=True, text=True)
    assert result.returncode != 0 and "ModuleNotFoundError: import of torch halted" in result.stderr
