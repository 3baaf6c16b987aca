"""Devices: which execution provider a session runs on, that a missing or failed GPU
provider is one clear error and never a quiet CPU fallback, and that the GPU path stays
torch-free. A fake GPU build (`gpu_build`) stands in for onnxruntime-gpu on CPU machines;
the `gpu` tests run the real one."""

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

import mtl_deploy
from mtl_deploy.cli import app
from mtl_deploy.errors import InputError
from mtl_deploy.exporters import verify_export
from mtl_deploy.runtime import FewShotAdapter, Predictor, ProviderError
from mtl_deploy.runtime.session import resolve_device

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
HAS_CUDA = CUDA in ort.get_available_providers()
cpu_build_only = pytest.mark.skipif(HAS_CUDA, reason="the installed ONNX Runtime has CUDAExecutionProvider")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu: CUDAExecutionProvider is not available")
REAL_SESSION = ort.InferenceSession


def rows(n=6):
    return np.random.default_rng(0).standard_normal((n, 50)).astype(np.float32)


@pytest.fixture
def gpu_build(monkeypatch):
    """onnxruntime-gpu as the session builder sees it: TensorRT and CUDA listed, and sessions
    that compute on the CPU but report the providers they were given, or `started` when set
    (what ONNX Runtime does when a GPU provider fails to start: it drops it and carries on)."""
    build = SimpleNamespace(started=None, sessions=[], preloads=0, printed="")

    class Session:
        def __init__(self, path, options=None, providers=(), **kwargs):
            build.sessions.append(SimpleNamespace(providers=providers, kwargs=kwargs))
            self.real = REAL_SESSION(path, options, providers=[CPU])
            names = [p[0] if isinstance(p, tuple) else p for p in providers]
            self.active = names if build.started is None else build.started

        def get_providers(self):
            return list(self.active)

        def run(self, *args):
            return self.real.run(*args)

    def preload_dlls():
        build.preloads += 1
        print(build.printed, end="")

    monkeypatch.setattr(ort, "get_available_providers", lambda: [TENSORRT, CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", Session)
    monkeypatch.setattr(ort, "preload_dlls", preload_dlls, raising=False)
    return build


@pytest.fixture
def cpu_build(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    backbone = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    model = mtl_deploy.fewshot(backbone, example_inputs=torch.randn(3, 4), ways=3)
    path = tmp_path_factory.mktemp("adapter") / "adapter"
    mtl_deploy.export(model, path, format="adapter")
    return path


def one_line(message: str) -> str:
    assert message.strip() and "\n" not in message.strip(), message
    return message


def test_device_names(cpu_build):
    assert [resolve_device(d) for d in ("cpu", "cuda", "tensorrt", "CUDA", "auto")] == [
        "cpu", "cuda", "tensorrt", "cuda", "cpu"]


@pytest.mark.parametrize("device", ["nonsense", "gpu", "", None, 0, "cpu:1", "cuda:", "cuda:-1", "cuda:x", "auto:0"])
def test_unknown_device_is_one_clear_error(export_dir, device):
    with pytest.raises(InputError, match=r"unknown device .*; use one of auto, cpu, cuda, tensorrt") as err:
        Predictor(export_dir, device=device)
    one_line(str(err.value))
    with pytest.raises(InputError, match="unknown device"):
        verify_export(export_dir, device=device)


@cpu_build_only
@pytest.mark.parametrize("device, provider", [("cuda", CUDA), ("tensorrt", TENSORRT)])
def test_a_gpu_device_on_this_cpu_build_is_one_clear_error(export_dir, device, provider):
    with pytest.raises(ProviderError) as err:
        Predictor(export_dir, device=device)
    message = one_line(str(err.value))
    assert f"device {device!r} needs {provider}" in message
    assert "pip uninstall -y onnxruntime && pip install onnxruntime-gpu" in message
    assert err.value.exit_code == 1
    with pytest.raises(ProviderError, match=provider):
        verify_export(export_dir, device=device)


def test_auto_serves_on_the_cpu_of_a_cpu_build(export_dir, cpu_build):
    assert Predictor(export_dir).providers == [CPU]


def test_auto_picks_cuda_over_tensorrt(export_dir, gpu_build):
    predictor = Predictor(export_dir)
    (session,) = gpu_build.sessions
    assert [p[0] if isinstance(p, tuple) else p for p in session.providers] == [CUDA, CPU]
    assert predictor.providers == [CUDA, CPU]
    assert session.kwargs["enable_fallback"] == 0  # no retry on the CPU behind the caller's back
    want = Predictor(export_dir, device="cpu").predict(rows())
    for task, values in predictor.predict(rows()).items():
        np.testing.assert_array_equal(values, want[task])


def test_cuda_computes_in_full_float32(export_dir, gpu_build):
    Predictor(export_dir, device="cuda")
    assert gpu_build.sessions[0].providers[0] == (CUDA, {"device_id": "0", "use_tf32": "0"})


def test_a_gpu_index_reaches_every_gpu_provider(export_dir, gpu_build):
    assert [resolve_device(d) for d in ("cuda:0", "CUDA:2", "tensorrt:1", " cuda:01 ")] == [
        "cuda", "cuda:2", "tensorrt:1", "cuda:1"]
    Predictor(export_dir, device="cuda:2")
    Predictor(export_dir, device="tensorrt:1")
    cuda, tensorrt = gpu_build.sessions
    assert cuda.providers == [(CUDA, {"device_id": "2", "use_tf32": "0"}), CPU]
    assert tensorrt.providers == [(TENSORRT, {"device_id": "1"}), (CUDA, {"device_id": "1", "use_tf32": "0"}), CPU]


def test_a_gpu_index_that_does_not_start_names_it(export_dir, gpu_build):
    gpu_build.started = [CPU]
    with pytest.raises(ProviderError, match="device 'cuda:3': CUDAExecutionProvider is installed but did not start.*"
                                            "and a GPU 3"):
        Predictor(export_dir, device="cuda:3")


def test_tensorrt_falls_back_to_cuda_then_cpu_for_missing_operators(export_dir, gpu_build):
    assert Predictor(export_dir, device="tensorrt").providers == [TENSORRT, CUDA, CPU]


@pytest.mark.parametrize("device", ["cuda", "tensorrt", "auto"])
def test_a_provider_that_did_not_start_is_an_error_not_a_cpu_fallback(export_dir, gpu_build, device):
    gpu_build.started = [CPU]
    with pytest.raises(ProviderError, match=r"is installed but did not start.*device 'cpu'") as err:
        Predictor(export_dir, device=device)
    assert (TENSORRT if device == "tensorrt" else CUDA) in one_line(str(err.value))


def test_why_a_provider_did_not_start_is_in_the_error_not_on_stdout(export_dir, gpu_build, capsys):
    gpu_build.started = [CPU]
    gpu_build.printed = "Failed to load libcudnn.so.9: cannot open shared object file\nPlease follow ...\n"
    with pytest.raises(ProviderError, match=r"did not start \(Failed to load libcudnn.so.9"):
        Predictor(export_dir, device="cuda")
    assert capsys.readouterr().out == ""


def test_preload_dlls_runs_before_gpu_sessions_when_torch_is_installed(export_dir, gpu_build, monkeypatch):
    Predictor(export_dir, device="cuda")
    assert gpu_build.preloads == 1
    Predictor(export_dir, device="cpu")
    assert gpu_build.preloads == 1
    monkeypatch.setitem(sys.modules, "torch", None)  # torch blocked: no torch wheels' libraries to find
    Predictor(export_dir, device="cuda")
    assert gpu_build.preloads == 1
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.delattr(ort, "preload_dlls")  # onnxruntime-gpu before 1.21
    assert Predictor(export_dir, device="cuda").providers[0] == CUDA


def test_the_gpu_path_never_imports_torch(export_dir):
    code = f"""
import sys
import onnxruntime as ort
real = ort.InferenceSession
class Session(real):
    def __init__(self, path, options, providers, **kwargs):
        super().__init__(path, options, providers=["CPUExecutionProvider"])
    def get_providers(self):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
ort.InferenceSession, ort.get_available_providers = Session, lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
ort.preload_dlls = lambda: print("preloaded", end=" ")
from mtl_deploy.runtime import Predictor
Predictor({str(export_dir)!r}, device="cuda").predict([[0.0] * 50])
print("torch" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "False\n"  # preload_dlls ran (its print was kept back) and torch stayed out


def test_fewshot_adapter_takes_a_device(adapter_dir, gpu_build):
    adapter = FewShotAdapter(adapter_dir, device="cuda")
    assert adapter.providers == [CUDA, CPU]
    assert Predictor(adapter_dir, device="tensorrt").providers == [TENSORRT, CUDA, CPU]
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    got = adapter.adapt(x, [0, 1, 2, 0, 1, 2]).predict(x)
    want = FewShotAdapter(adapter_dir, device="cpu").adapt(x, [0, 1, 2, 0, 1, 2]).predict(x)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(InputError, match="unknown device"):
        FewShotAdapter(adapter_dir, device="nonsense")
    gpu_build.started = [CPU]
    with pytest.raises(ProviderError, match="did not start"):
        FewShotAdapter(adapter_dir, device="cuda")


def test_verify_proves_on_the_cpu_unless_asked(export_dir, checkpoint_dir, gpu_build):
    assert verify_export(export_dir).runtimes == ["onnxruntime"]
    assert gpu_build.sessions[-1].providers == [CPU]
    report = verify_export(export_dir, checkpoint_dir, device="cuda")
    assert report.passed and report.runtimes == ["onnx.reference", "onnxruntime (CUDAExecutionProvider)"]
    gpu_build.started = [CPU]
    with pytest.raises(ProviderError, match="did not start"):
        verify_export(export_dir, device="cuda")


def test_verify_of_a_torch_artifact_takes_no_device(checkpoint_dir, tmp_path, gpu_build):
    mtl_deploy.export(checkpoint_dir, tmp_path / "pt2", format="pt2")
    with pytest.raises(InputError, match="in the pt2 format.*--device and --runtimes apply to ONNX exports"):
        verify_export(tmp_path / "pt2", checkpoint_dir, device="cuda")


@pytest.mark.parametrize("command", ["predict", "verify"])
@pytest.mark.parametrize("device, code", [("cuda", 1), ("nonsense", 2)])
def test_cli_device_error_is_one_line_and_writes_nothing(export_dir, tmp_path, cpu_build, command, device, code):
    np.save(tmp_path / "rows.npy", rows())
    args = (["predict", str(export_dir), "--input", str(tmp_path / "rows.npy"), "--output", str(tmp_path / "p.csv")]
            if command == "predict" else ["verify", str(export_dir)])
    result = CliRunner().invoke(app, [*args, "--device", device])
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and device in lines[0], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.npy"]


@pytest.mark.gpu
@needs_cuda
def test_cuda_serves_what_the_cpu_serves(export_dir, checkpoint_dir):
    x = np.random.default_rng(3).standard_normal((64, 50)).astype(np.float32)
    gpu = Predictor(export_dir, device="cuda")
    assert gpu.providers[0] == CUDA
    want = Predictor(export_dir, device="cpu").predict(x)
    for task, values in gpu.predict(x).items():
        np.testing.assert_allclose(values, want[task], atol=1e-4, rtol=1e-4)
    assert verify_export(export_dir, checkpoint_dir, device="cuda").passed
