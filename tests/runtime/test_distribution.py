"""The mtl-deploy-runtime distribution: one module under both names, one version, and on
its own (`pip install ./runtime` into a fresh virtual environment, the slow tests) no
PyTorch nor Typer, while its console script, `Predictor` and `FewShotAdapter` (adapting,
and loading a task file the main package saved) give the numbers the main package gives.
Prints the installed size."""

from __future__ import annotations

import importlib
import json
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

from importlib.metadata import requires, version

import numpy as np
import pytest

import mtl_deploy
import mtl_deploy_runtime
from mtl_deploy.errors import InputError
from mtl_deploy.meta.train import meta_train_and_save
from mtl_deploy.runtime import FewShotAdapter, Predictor
from tests.meta.test_adapt_and_export import brief_config

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"

SERVE = """
import sys
from pathlib import Path
import numpy as np
from mtl_deploy_runtime import FewShotAdapter, Predictor
export, adapter, case, task_file, out = map(Path, sys.argv[1:])
case = np.load(case)
device = FewShotAdapter(adapter)
task = device.adapt(case["support_x"], case["support_y"])
np.savez(out, query_pred=task.predict(case["query_x"]), from_task_file=device.load(task_file).predict(case["query_x"]),
         **Predictor(export).predict(case["rows"]))
"""

SIZES = """
import json, sys
from importlib.metadata import distributions
sizes = {d.metadata["Name"]: sum(f.locate().stat().st_size for f in d.files or [] if f.locate().is_file())
         for d in distributions()}
print(json.dumps(sizes))
"""


def test_each_runtime_module_is_one_module_under_both_names(tmp_path):
    for info in pkgutil.iter_modules(mtl_deploy_runtime.__path__):
        module = importlib.import_module(f"mtl_deploy_runtime.{info.name}")
        assert importlib.import_module(f"mtl_deploy.runtime.{info.name}") is module
    assert importlib.import_module("mtl_deploy.runtime") is mtl_deploy_runtime
    for name in ("errors", "atomic", "version"):
        assert importlib.import_module(f"mtl_deploy.{name}") is getattr(mtl_deploy, name)
        assert getattr(mtl_deploy, name) is importlib.import_module(f"mtl_deploy_runtime.{name}")
    with pytest.raises(InputError, match="does not exist"):  # what the runtime raises, as the main package names it
        mtl_deploy_runtime.Predictor(tmp_path / "missing")


def test_both_distributions_have_one_version():
    assert version("mtl-deploy") == version("mtl-deploy-runtime") == mtl_deploy.__version__
    assert f"mtl-deploy-runtime=={mtl_deploy.__version__}" in requires("mtl-deploy")


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtual environment holding mtl-deploy-runtime and what it pulls in, nothing else."""
    root = tmp_path_factory.mktemp("runtime-alone")
    source = shutil.copytree(RUNTIME, root / "source", ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                                      "__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    installed = run(root, root / "venv" / "bin" / "python", "-m", "pip", "install", "--quiet", source)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return root / "venv"


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("adapter")
    meta_train_and_save(brief_config("anil"), root / "ckpt", progress=False)
    mtl_deploy.export(root / "ckpt", root / "adapter", format="adapter")
    return root / "adapter"


def run(cwd: Path, *command, **options) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, cwd=cwd, **options)


@pytest.mark.slow
def test_runtime_installs_alone_and_without_torch(venv):
    listed = run(venv, venv / "bin" / "python", "-m", "pip", "list", "--format", "json", check=True).stdout
    names = {entry["name"].lower() for entry in json.loads(listed)}
    assert {"mtl-deploy-runtime", "onnxruntime", "numpy"} <= names
    assert not names & {"torch", "typer", "mtl-deploy"}
    probe = "import importlib.util; print(importlib.util.find_spec('mtl_deploy'))"  # no mtl_deploy package shipped
    assert run(venv, venv / "bin" / "python", "-c", probe, check=True).stdout.strip() == "None"
    sizes = json.loads(run(venv, venv / "bin" / "python", "-c", SIZES, check=True).stdout)
    tools = {"pip", "setuptools"}  # what every virtual environment starts with
    megabytes = {name: size / 1e6 for name, size in sizes.items() if name.lower() not in tools}
    print(f"\nmtl-deploy-runtime installed without PyTorch: {sum(megabytes.values()):.1f} MB of site-packages ("
          + ", ".join(f"{name} {mb:.2f} MB" for name, mb in sorted(megabytes.items(), key=lambda kv: -kv[1])) + ")")
    assert sum(megabytes.values()) < 200  # the CPU build of torch alone is several hundred MB


@pytest.mark.slow
def test_runtime_alone_serves_and_adapts_as_the_main_package(venv, export_dir, adapter_dir, tmp_path):
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((9, *Predictor(export_dir).row_shape)).astype(np.float32)
    adapter = FewShotAdapter(adapter_dir)
    ways = adapter.task["out_dim"]
    case = {"rows": rows, "support_x": rng.standard_normal((ways * 3, *adapter.row_shape)).astype(np.float32),
            "support_y": np.arange(ways).repeat(3), "query_x": rng.standard_normal((7, *adapter.row_shape))}
    np.savez(tmp_path / "case.npz", **case)
    np.save(tmp_path / "rows.npy", rows)
    task = adapter.adapt(case["support_x"], case["support_y"])
    task.save(tmp_path / "task.npz")

    served = run(venv, venv / "bin" / "python", "-c", SERVE, export_dir, adapter_dir, tmp_path / "case.npz",
                 tmp_path / "task.npz", tmp_path / "served.npz")
    assert served.returncode == 0, served.stderr
    script = run(venv, venv / "bin" / "mtl-deploy-runtime", "predict", export_dir, "--input", tmp_path / "rows.npy",
                 "--output", tmp_path / "script.npz")
    assert script.returncode == 0 and script.stdout == f"predictions: {tmp_path / 'script.npz'}\n", script.stderr

    query_pred = task.predict(case["query_x"])
    want = {**Predictor(export_dir).predict(rows), "query_pred": query_pred, "from_task_file": query_pred}
    with np.load(tmp_path / "served.npz") as got, np.load(tmp_path / "script.npz") as by_script:
        assert sorted(got.files) == sorted(want)
        for name, values in want.items():
            assert np.abs(got[name] - values).max() <= 1e-6, name
            if name not in ("query_pred", "from_task_file"):
                assert np.abs(by_script[name] - values).max() <= 1e-6, name


@pytest.mark.slow
def test_runtime_script_errors_are_one_line(venv, tmp_path):
    done = run(venv, venv / "bin" / "mtl-deploy-runtime", "predict", tmp_path / "missing", "--input", "rows.csv")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "does not exist" in done.stderr
    usage = run(venv, venv / "bin" / "mtl-deploy-runtime", "predict")
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1 and usage.stderr.startswith("error: ")
