"""mtl_deploy.ops.multihead_linear on every backend (tests/ops/devices.py) against a per-head F.linear oracle."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from mtl_deploy import ops
from tests.ops.devices import cpu, on


def sample_inputs(n: int = 16, seed: int = 0):
    """Random (B, D, H, C), every head or routed, float32 and float64, plus edges."""
    rng = random.Random(seed)
    shapes = [(1, 1, 1, 1, True), (1, 256, 64, 10, True), (300, 256, 4, 10, False), (65, 17, 5, 3, True)]
    while len(shapes) < n:
        shapes.append((rng.randint(1, 300), rng.randint(1, 256), rng.randint(1, 64), rng.randint(1, 20), rng.random() < 0.6))
    cases = []
    for b, d, h, c, routed in shapes:
        gen = torch.Generator().manual_seed(rng.randrange(2**31))
        dtype = rng.choice([torch.float32, torch.float64])
        cases.append(dict(
            x=torch.randn(b, d, generator=gen, dtype=dtype),  # (B, D)
            weight=torch.randn(h, c, d, generator=gen, dtype=dtype) / d**0.5,  # (H, C, D)
            bias=torch.randn(h, c, generator=gen, dtype=dtype),  # (H, C)
            head_ids=torch.randint(0, h, (b,), generator=gen) if routed else None,  # (B,)
        ))
    return cases


def oracle(x, weight, bias, head_ids=None):
    """Each head as its own nn.Linear; routed rows pick their head's output."""
    every = torch.stack([F.linear(x, weight[h], bias[h]) for h in range(weight.shape[0])], dim=1)  # (B, H, C)
    if head_ids is None:
        return every
    return every[torch.arange(x.shape[0]), head_ids]  # (B, C)


def case_id(c):
    b, d = c["x"].shape
    h, k, _ = c["weight"].shape
    return f"B{b}D{d}H{h}C{k}-{'routed' if c['head_ids'] is not None else 'all'}"


@pytest.mark.parametrize("case", sample_inputs(), ids=case_id)
def test_values_and_gradients_match_oracle(backend, case):
    results = []
    for fn, c in ((ops.multihead_linear, on(backend, case)), (oracle, case)):
        x, w, b = (c[k].clone().requires_grad_() for k in ("x", "weight", "bias"))
        out = fn(x, w, b, c["head_ids"])
        probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=out.dtype).to(out.device)
        results.append(cpu([out, *torch.autograd.grad((probe * out).sum(), (x, w, b))]))
    tol = dict(rtol=1e-9, atol=1e-9) if case["x"].dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("routed", [False, True])
def test_gradcheck(backend, routed):
    gen = torch.Generator().manual_seed(0)
    x, w, b = (on(backend, torch.randn(*shape, dtype=torch.float64, generator=gen)).requires_grad_()
               for shape in ((9, 6), (3, 4, 6), (3, 4)))
    ids = on(backend, torch.randint(0, 3, (9,), generator=gen)) if routed else None
    assert torch.autograd.gradcheck(lambda x, w, b: ops.multihead_linear(x, w, b, ids), (x, w, b))


@pytest.mark.parametrize("case", sample_inputs(4, seed=5), ids=case_id)
def test_opcheck(backend, case):
    if backend == "reference":
        pytest.skip("opcheck applies to the registered C++ op")
    case = on(backend, case)
    args = (case["x"].requires_grad_(), case["weight"].requires_grad_(), case["bias"].requires_grad_(), case["head_ids"])
    torch.library.opcheck(torch.ops.mtl_deploy.multihead_linear.default, args)


def test_export_keeps_the_op(backend):
    if backend == "reference":
        pytest.skip("checks the registered C++ op under torch.export")

    class Routed(torch.nn.Module):
        def forward(self, x, w, b, ids):
            return torch.ops.mtl_deploy.multihead_linear(x, w, b, ids)

    args = on(backend, (torch.randn(4, 8), torch.randn(2, 3, 8), torch.randn(2, 3), torch.tensor([0, 1, 1, 0])))
    program = torch.export.export(Routed(), args)
    assert "mtl_deploy.multihead_linear" in program.graph_module.code
    torch.testing.assert_close(program.module()(*args), oracle(*args))


def valid():
    return dict(x=torch.randn(5, 4), weight=torch.randn(3, 2, 4), bias=torch.randn(3, 2), head_ids=torch.tensor([0, 1, 2, 1, 0]))


BAD = {
    "x wrong rank": (lambda c: c | {"x": c["x"][None]}, "x must be"),
    "weight wrong D": (lambda c: c | {"weight": torch.randn(3, 2, 5)}, "weight must be"),
    "bias shape": (lambda c: c | {"bias": torch.randn(2, 3)}, "bias must be"),
    "non-contiguous x": (lambda c: c | {"x": torch.randn(4, 5).t()}, "contiguous"),
    "wrong dtype": (lambda c: c | {"weight": c["weight"].double()}, "dtype"),
    "head_ids out of range": (lambda c: c | {"head_ids": torch.tensor([0, 1, 3, 1, 0])}, "head_ids"),
    "head_ids length": (lambda c: c | {"head_ids": torch.tensor([0, 1])}, "head_ids"),
    "head_ids dtype": (lambda c: c | {"head_ids": torch.tensor([0, 1, 2, 1, 0], dtype=torch.int32)}, "head_ids"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_inputs_raise(backend, name):
    mutation, message = BAD[name]
    with pytest.raises((ValueError, RuntimeError), match=message):
        ops.multihead_linear(**on(backend, mutation(valid())))


@pytest.mark.parametrize("name", ["x wrong rank", "weight wrong D", "head_ids out of range", "head_ids length"])
def test_kernel_checks_its_own_arguments(backend, name):
    if backend == "reference":
        pytest.skip("checks the C++ op called directly")
    case = on(backend, BAD[name][0](valid()))
    with pytest.raises(RuntimeError, match="multihead_linear"):
        torch.ops.mtl_deploy.multihead_linear(case["x"], case["weight"], case["bias"], case["head_ids"])
