"""mtl_deploy.ops.maml_step on every backend (tests/ops/devices.py) against autograd through the reference:
the loss and the meta-gradients (params and Meta-SGD rates), both orders, random shapes."""

from __future__ import annotations

import random

import pytest
import torch

from mtl_deploy import ops
from tests.ops.devices import cpu, on


def make_case(rng: random.Random, *, T, K, Q, widths, steps, loss, activation, meta_sgd, dtype, order):
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    params = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        params += [torch.randn(fan_out, fan_in, generator=gen, dtype=dtype) / fan_in**0.5,
                   0.1 * torch.randn(fan_out, generator=gen, dtype=dtype)]

    def labels(rows):
        if loss == "mse":
            return torch.randn(T, rows, widths[-1], generator=gen, dtype=dtype)  # (T, rows, out)
        return torch.randint(0, widths[-1], (T, rows), generator=gen)  # (T, rows)

    sx, qx = (torch.randn(T, rows, widths[0], generator=gen, dtype=dtype) for rows in (K, Q))  # (T, K|Q, in)
    lr = [0.05 * torch.rand(p.shape, generator=gen, dtype=dtype) for p in params] if meta_sgd else 0.05
    return dict(params=params, support_x=sx, support_y=labels(K), query_x=qx, query_y=labels(Q), steps=steps, lr=lr,
                loss=loss, activation=activation, order=order)


def sample_inputs(n: int = 16, seed: int = 0):
    """Random cases plus edges: one task, one shot, the sinusoid shape, zero steps."""
    rng = random.Random(seed)
    cases = [
        dict(T=1, K=1, Q=1, widths=[1, 1], steps=1, loss="mse", activation="relu", meta_sgd=False, dtype=torch.float64,
             order=2),
        dict(T=25, K=10, Q=10, widths=[1, 40, 40, 1], steps=5, loss="mse", activation="relu", meta_sgd=False,
             dtype=torch.float32, order=1),
        dict(T=25, K=10, Q=10, widths=[1, 40, 40, 1], steps=1, loss="mse", activation="relu", meta_sgd=True,
             dtype=torch.float32, order=2),
        dict(T=3, K=4, Q=2, widths=[3, 5, 4], steps=0, loss="cross_entropy", activation="tanh", meta_sgd=True,
             dtype=torch.float64, order=1),
    ]
    while len(cases) < n:
        widths = [rng.choice([1, 2, 3, 8, 17, 33]) for _ in range(rng.randint(2, 4))]
        loss = rng.choice(["mse", "cross_entropy"])
        if loss == "cross_entropy":
            widths[-1] = max(widths[-1], 2)
        cases.append(dict(T=rng.randint(1, 20), K=rng.randint(1, 12), Q=rng.randint(1, 12), widths=widths,
                          steps=rng.randint(1, 5), loss=loss, activation=rng.choice(["relu", "tanh"]),
                          meta_sgd=rng.random() < 0.5, dtype=rng.choice([torch.float32, torch.float64]),
                          order=rng.choice([1, 2])))
    return [make_case(rng, **c) for c in cases]


def case_id(c):
    return f"T{c['support_x'].shape[0]}K{c['support_x'].shape[1]}-{c['loss']}-o{c['order']}"


def call(fn, case):
    keys = ("steps", "lr", "loss", "activation", "order")
    return fn(case["params"], case["support_x"], case["support_y"], case["query_x"], case["query_y"],
              **{k: case[k] for k in keys})


@pytest.mark.parametrize("case", sample_inputs(), ids=case_id)
def test_loss_and_meta_gradients_match_autograd_through_the_reference(backend, case):
    loss, grads, grad_lr = call(ops.maml_step, on(backend, case))
    loss, grads, grad_lr = loss.cpu(), cpu(grads), cpu(grad_lr)
    want_loss, want_grads, want_lr = call(ops.maml_step_reference, case)
    assert len(grad_lr) == (len(case["params"]) if isinstance(case["lr"], list) else 0)
    tol = dict(rtol=1e-7, atol=1e-9) if case["support_x"].dtype == torch.float64 else dict(rtol=2e-3, atol=2e-4)
    torch.testing.assert_close(loss, want_loss, **tol)
    for got, want in zip(grads + grad_lr, want_grads + want_lr):
        scale = want.abs().max().item() + 1.0
        torch.testing.assert_close(got / scale, want / scale, **tol)


@pytest.mark.parametrize("meta_sgd", [False, True])
def test_second_order_gradient_matches_finite_differences(backend, meta_sgd):
    case = make_case(random.Random(5), T=2, K=3, Q=2, widths=[2, 3, 2], steps=2, loss="cross_entropy",
                     activation="tanh", meta_sgd=meta_sgd, dtype=torch.float64, order=2)
    case = on(backend, case)
    _, grads, grad_lr = call(ops.maml_step, case)
    tensors = case["params"] + (case["lr"] if meta_sgd else [])
    eps = 1e-6
    for tensor, grad in zip(tensors, grads + grad_lr):
        flat = tensor.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            up = call(ops.maml_step, case)[0].item()
            flat[i] = old - eps
            down = call(ops.maml_step, case)[0].item()
            flat[i] = old
            assert abs((up - down) / (2 * eps) - grad.view(-1)[i].item()) < 1e-6


def op_args(case):
    lr = case["lr"] if isinstance(case["lr"], list) else []
    scalar = 0.0 if lr else case["lr"]
    return (case["params"], case["support_x"], case["support_y"], case["query_x"], case["query_y"], lr, scalar,
            case["steps"], ("mse", "cross_entropy").index(case["loss"]), ("relu", "tanh").index(case["activation"]),
            case["order"])


@pytest.mark.parametrize("case", sample_inputs(4, seed=3), ids=case_id)
def test_opcheck(backend, case):
    if backend == "reference":
        pytest.skip("opcheck applies to the registered C++ op")
    torch.library.opcheck(torch.ops.mtl_deploy.maml_step.default, op_args(on(backend, case)))


def test_compile_and_export_of_the_registered_op(backend):
    if backend == "reference":
        pytest.skip("checks the registered C++ op under torch.compile and torch.export")
    case = on(backend, sample_inputs()[1])
    args = op_args(case)
    eager = torch.ops.mtl_deploy.maml_step(*args)

    class Step(torch.nn.Module):
        def forward(self, sx, sy, qx, qy):
            return torch.ops.mtl_deploy.maml_step(args[0], sx, sy, qx, qy, *args[5:])

    data = args[1:5]
    compiled = torch.compile(Step(), fullgraph=True)(*data)
    program = torch.export.export(Step(), data)
    assert "mtl_deploy.maml_step" in program.graph_module.code
    for result in (compiled, program.module()(*data)):
        torch.testing.assert_close(result[0], eager[0])
        for got, want in zip(result[1], eager[1]):
            torch.testing.assert_close(got, want)


BAD = {
    "query tasks": (lambda c: c | {"query_x": c["query_x"][:1], "query_y": c["query_y"][:1]}, "same 3 tasks"),
    "query labels": (lambda c: c | {"query_y": c["query_y"][:, :1]}, "y must be"),
    "query width": (lambda c: c | {"query_x": torch.randn(3, 2, 7, dtype=torch.float64)}, r"params\[0\]"),
    "order": (lambda c: c | {"order": 3}, "order"),
    "support dtype": (lambda c: c | {"support_x": c["support_x"].float()}, "dtype"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_inputs_raise(backend, name):
    mutation, message = BAD[name]
    case = on(backend, mutation(make_case(random.Random(1), T=3, K=4, Q=2, widths=[2, 3, 2], steps=1, loss="mse",
                                          activation="relu", meta_sgd=False, dtype=torch.float64, order=2)))
    with pytest.raises((ValueError, RuntimeError), match=message):
        call(ops.maml_step, case)
