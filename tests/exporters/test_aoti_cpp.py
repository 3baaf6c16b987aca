"""The C++ example loads the AOTInductor package with libtorch alone and prints the same
numbers as the PyTorch model (built with CMake when a compiler is present)."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import mtl_deploy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "aoti_cpp"


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("c++") is None,
                    reason="the C++ example needs cmake and a C++ compiler")
def test_cpp_program_serves_the_aoti_package(checkpoint_dir, tmp_path):
    mtl_deploy.export(checkpoint_dir, tmp_path / "aoti", format="aoti", batch_sizes=(1, 3))
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(EXAMPLE), "-B", str(build), f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, capture_output=True)
    run = subprocess.run([str(build / "aoti_predict"), str(tmp_path / "aoti" / "model.aoti.pt2"), "3", "50"],
                         check=True, capture_output=True, text=True)
    printed = [np.array(line.split()[2:], dtype=np.float32) for line in run.stdout.strip().splitlines()]
    x = torch.arange(3 * 50, dtype=torch.float32).sin().reshape(3, 50)
    with torch.no_grad():
        want = mtl_deploy.load(checkpoint_dir)(x)
    assert len(printed) == len(want)
    for got, expected in zip(printed, want.values()):
        np.testing.assert_allclose(got, expected.flatten().numpy(), atol=1e-5, rtol=1e-4)
