"""The CUDA inner-loop kernels, run on the CPU: csrc/cuda/inner_loop.cu compiled as C++
with its launches rewritten to run every CUDA thread as a std::thread (one block at a
time, __syncthreads a barrier; tests/ops/cuda_emulation/shim.h), composed as the CUDA
maml_step composes them, against the PyTorch reference in float64. Machines without a
GPU check the kernels' mathematics and barriers this way; speed needs a GPU."""

from __future__ import annotations

import ctypes
import itertools
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from mtl_deploy.ops import sources
from mtl_deploy.ops.reference import inner_loop_reference, maml_step_reference

HERE = Path(__file__).resolve().parent / "cuda_emulation"
LAUNCH = re.compile(r"([\w:]+(?:<\w+>)?)<<<(.*?)>>>\(", re.S)
SHARED = "extern __shared__ __align__(16) unsigned char shared_bytes[];"


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("needs g++")
    source = (sources.CSRC / "cuda" / "inner_loop.cu").read_text()
    assert SHARED in source and len(LAUNCH.findall(source)) == 2  # the rewrite below must see them
    source = LAUNCH.sub(r"emulate_launch(\1, \2)(", source.replace(SHARED, "static unsigned char shared_bytes[16];"))
    work = tmp_path_factory.mktemp("cuda_emulation")
    (work / "inner_loop_emulated.cpp").write_text(source)
    (work / "launch.h").write_text((sources.CSRC / "cuda" / "launch.h").read_text().replace(
        "#include <cuda_runtime.h>", '#include "shim.h"'))
    for name in ("shim.h", "driver.cpp"):
        shutil.copy(HERE / name, work / name)
    library = work / "emulated.so"
    done = subprocess.run(["g++", "-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", f"-I{work}", str(work / "driver.cpp"),
                           "-o", str(library)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return ctypes.CDLL(str(library))


def pointer(t: torch.Tensor | None):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def case(widths, tasks, shots, queries, steps, loss, activation, meta_sgd, seed):
    gen = torch.Generator().manual_seed(seed)
    params = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        params += [torch.randn(fan_out, fan_in, generator=gen, dtype=torch.float64) / fan_in**0.5,
                   0.1 * torch.randn(fan_out, generator=gen, dtype=torch.float64)]
    lr = [0.05 + 0.2 * torch.rand(p.shape, generator=gen, dtype=torch.float64) for p in params] if meta_sgd else 0.1

    def data(rows):
        x = torch.randn(tasks, rows, widths[0], generator=gen, dtype=torch.float64)
        if loss == "mse":
            return x, torch.randn(tasks, rows, widths[-1], generator=gen, dtype=torch.float64)
        return x, torch.randint(0, widths[-1], (tasks, rows), generator=gen)

    return params, lr, *data(shots), *data(queries)


def run(lib, widths, params, lr, sx, sy, qx, qy, steps, loss, activation, order):
    tasks, numel = sx.shape[0], sum(p.numel() for p in params)
    flat = torch.cat([p.flatten() for p in params])
    rates = torch.cat([a.flatten() for a in lr]) if isinstance(lr, list) else None
    outputs = torch.zeros(1, dtype=torch.float64), torch.zeros(numel, dtype=torch.float64), \
        torch.zeros(numel, dtype=torch.float64), torch.zeros(tasks, numel, dtype=torch.float64)
    mse, width_list = loss == "mse", torch.tensor(widths)  # every tensor lives through the call
    bad = lib.maml_step(len(widths) - 1, pointer(width_list), ctypes.c_int64(tasks), ctypes.c_int64(sx.shape[1]),
                        ctypes.c_int64(qx.shape[1]), ctypes.c_int64(steps), int(not mse), int(activation == "tanh"),
                        pointer(flat), pointer(rates), ctypes.c_double(0.0 if rates is not None else lr), pointer(sx),
                        pointer(sy) if mse else None, None if mse else pointer(sy), pointer(qx),
                        pointer(qy) if mse else None, None if mse else pointer(qy), order, *map(pointer, outputs))
    return bad, outputs


CASES = [(widths, loss, activation, meta_sgd, order) for widths, loss, activation, meta_sgd, order in itertools.product(
    ([3, 5, 2], [2, 4, 3, 3], [4, 3]), ("mse", "cross_entropy"), ("relu", "tanh"), (False, True), (1, 2))]


@pytest.mark.slow
@pytest.mark.parametrize("widths, loss, activation, meta_sgd, order", CASES + [([1, 40, 40, 1], "mse", "relu", False, 2),
                                                                         ([6, 40, 33, 7], "cross_entropy", "tanh", True, 2)],
                         ids=lambda v: "-".join(map(str, v)) if isinstance(v, list) else str(v))
def test_emulated_cuda_kernels_match_the_reference(emulated, widths, loss, activation, meta_sgd, order):
    params, lr, sx, sy, qx, qy = case(widths, 3, 5, 4, 3, loss, activation, meta_sgd, seed=len(widths) + order)
    bad, (meta_loss, grad_params, grad_lr, adapted) = run(emulated, widths, params, lr, sx, sy, qx, qy, 3, loss,
                                                           activation, order)
    assert bad == 0
    want_loss, want_grads, want_lr = maml_step_reference(params, sx, sy, qx, qy, steps=3, lr=lr, loss=loss,
                                                         activation=activation, order=order)
    want_adapted = inner_loop_reference(params, sx, sy, steps=3, lr=lr, loss=loss, activation=activation, order=1)
    torch.testing.assert_close(adapted, torch.cat([a.reshape(3, -1) for a in want_adapted], 1), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(meta_loss[0], want_loss, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(grad_params, torch.cat([g.flatten() for g in want_grads]), rtol=1e-8, atol=1e-9)
    if meta_sgd:
        torch.testing.assert_close(grad_lr, torch.cat([g.flatten() for g in want_lr]), rtol=1e-8, atol=1e-9)


def test_emulated_kernels_flag_class_ids_out_of_range(emulated):
    params, lr, sx, sy, qx, qy = case([3, 4, 2], 2, 3, 2, 1, "cross_entropy", "relu", False, seed=0)
    sy[1, 2] = 7
    bad, _ = run(emulated, [3, 4, 2], params, lr, sx, sy, qx, qy, 1, "cross_entropy", "relu", 2)
    assert bad == 1
