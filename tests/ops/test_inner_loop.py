"""mtl_deploy.ops.inner_loop on every backend (tests/ops/devices.py) against an independent per-task oracle.

The oracle adapts one task at a time with F.linear and torch.autograd.grad, the way a
reader would write MAML by hand; values and gradients (params and Meta-SGD lr) must
match it for random shapes, both losses, both activations and both orders.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from mtl_deploy import ops
from tests.ops.devices import cpu, on


def make_case(rng: random.Random, *, T, K, widths, steps, loss, activation, meta_sgd, dtype, order):
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    params = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        params.append(torch.randn(fan_out, fan_in, generator=gen, dtype=dtype) / fan_in**0.5)
        params.append(0.1 * torch.randn(fan_out, generator=gen, dtype=dtype))
    x = torch.randn(T, K, widths[0], generator=gen, dtype=dtype)  # (T, K, in)
    if loss == "mse":
        y = torch.randn(T, K, widths[-1], generator=gen, dtype=dtype)  # (T, K, out)
    else:
        y = torch.randint(0, widths[-1], (T, K), generator=gen)  # (T, K)
    # Small steps keep ten unrolled steps well conditioned in float32.
    lr = [0.05 * torch.rand(p.shape, generator=gen, dtype=dtype) for p in params] if meta_sgd else 0.05
    return dict(params=params, x=x, y=y, steps=steps, lr=lr, loss=loss, activation=activation, order=order)


def sample_inputs(n: int = 20, seed: int = 0):
    """Random cases spanning T 1..64, K 1..50, widths 1..256, 1..10 steps, plus edges."""
    rng = random.Random(seed)
    cases = [
        dict(T=1, K=1, widths=[1, 1], steps=1, loss="mse", activation="relu", meta_sgd=False, dtype=torch.float64, order=2),
        dict(T=64, K=50, widths=[2, 16, 3], steps=3, loss="cross_entropy", activation="tanh", meta_sgd=True, dtype=torch.float32, order=2),
        dict(T=3, K=5, widths=[256, 256, 2], steps=2, loss="mse", activation="tanh", meta_sgd=False, dtype=torch.float32, order=1),
        dict(T=25, K=10, widths=[1, 40, 40, 1], steps=5, loss="mse", activation="relu", meta_sgd=False, dtype=torch.float32, order=2),
        dict(T=4, K=6, widths=[3, 8, 2], steps=10, loss="mse", activation="tanh", meta_sgd=True, dtype=torch.float64, order=2),
    ]
    while len(cases) < n:
        layers = rng.randint(1, 3)
        widths = [rng.choice([1, 2, 3, 5, 8, 17, 33, 64, 100]) for _ in range(layers + 1)]
        loss = rng.choice(["mse", "cross_entropy"])
        if loss == "cross_entropy":
            widths[-1] = max(widths[-1], 2)
        # The oracle loops over tasks and steps: keep T * steps modest so the
        # suite stays fast; the fixed cases above cover the extremes.
        steps = rng.randint(1, 10)
        cases.append(
            dict(
                T=rng.randint(1, max(1, 120 // steps)), K=rng.randint(1, 50), widths=widths, steps=steps, loss=loss,
                activation=rng.choice(["relu", "tanh"]), meta_sgd=rng.random() < 0.5,
                dtype=rng.choice([torch.float32, torch.float64]), order=rng.choice([1, 2]),
            )
        )
    return [make_case(rng, **c) for c in cases]


def oracle(params, x, y, *, steps, lr, loss, activation, order):
    """One task at a time: forward with F.linear, torch.autograd.grad, SGD step."""
    act = torch.relu if activation == "relu" else torch.tanh
    adapted = []
    for t in range(x.shape[0]):
        theta = list(params)
        for _ in range(steps):
            h = x[t]
            for i in range(0, len(theta), 2):
                h = F.linear(h, theta[i], theta[i + 1])
                if i + 2 < len(theta):
                    h = act(h)
            task_loss = F.mse_loss(h, y[t]) if loss == "mse" else F.cross_entropy(h, y[t])
            grads = torch.autograd.grad(task_loss, theta, create_graph=order == 2)
            if order == 1:
                grads = [g.detach() for g in grads]
            rates = lr if isinstance(lr, list) else [lr] * len(theta)
            theta = [p - a * g for p, a, g in zip(theta, rates, grads)]
        adapted.append(theta)
    return [torch.stack(ps) for ps in zip(*adapted)]


def leaves(case):
    """Fresh leaf copies of the differentiable inputs."""
    params = [p.clone().requires_grad_() for p in case["params"]]
    lr = case["lr"]
    if isinstance(lr, list):
        lr = [a.clone().requires_grad_() for a in lr]
    return params, lr


def tolerances(dtype):
    return dict(rtol=1e-7, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("case", sample_inputs(), ids=lambda c: f"T{c['x'].shape[0]}K{c['x'].shape[1]}-{c['loss']}-o{c['order']}")
def test_values_and_gradients_match_oracle(backend, case):
    results = []
    for fn, c in ((ops.inner_loop, on(backend, case)), (oracle, case)):
        params, lr = leaves(c)
        kwargs = {k: c[k] for k in ("steps", "loss", "activation", "order")}
        adapted = fn(params, c["x"], c["y"], lr=lr, **kwargs)
        # A fixed random functional of the adapted parameters, so every entry gets its own weight.
        gen = torch.Generator().manual_seed(1)
        weights = [torch.randn(a.shape, generator=gen, dtype=a.dtype).to(a.device) for a in adapted]
        objective = sum((w * a).sum() for w, a in zip(weights, adapted))
        inputs = params + (lr if isinstance(lr, list) else [])
        results.append((cpu(adapted), cpu(torch.autograd.grad(objective, inputs))))
    tol = tolerances(case["x"].dtype)
    for got, want in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(got, want, **tol)
    for got, want in zip(results[0][1], results[1][1]):
        scale = want.abs().max().item() + 1.0
        torch.testing.assert_close(got / scale, want / scale, **tol)


PLAIN_ADAPTATION = sample_inputs(12, seed=7) + [
    make_case(random.Random(8), T=32, K=25, widths=[64, 5], steps=10, loss="cross_entropy", activation="relu",
              meta_sgd=False, dtype=torch.float32, order=1),  # the ANIL shape
    make_case(random.Random(9), T=17, K=3, widths=[4, 9, 3], steps=4, loss="cross_entropy", activation="relu",
              meta_sgd=True, dtype=torch.float32, order=1),
    make_case(random.Random(10), T=2, K=1, widths=[3, 2], steps=2, loss="cross_entropy", activation="tanh",
              meta_sgd=False, dtype=torch.float32, order=1),
]


@pytest.mark.parametrize("case", PLAIN_ADAPTATION, ids=lambda c: f"T{c['x'].shape[0]}K{c['x'].shape[1]}-{c['loss']}")
def test_adaptation_without_gradients_matches_oracle(backend, case):
    """Plain adaptation (no meta-gradient wanted) runs its own kernel for float32 ReLU
    networks and linear heads, both losses: tasks one per SIMD lane, group sizes that do
    not divide T included."""
    case = case | dict(activation="relu" if len(case["params"]) > 2 else case["activation"], x=case["x"].float(), params=[p.float() for p in case["params"]],
                       y=case["y"].float() if case["loss"] == "mse" else case["y"])
    if isinstance(case["lr"], list):
        case["lr"] = [a.float() for a in case["lr"]]
    kwargs = {k: case[k] for k in ("steps", "lr", "loss", "activation")}
    moved = on(backend, case)
    with torch.no_grad():
        got = cpu(ops.inner_loop(moved["params"], moved["x"], moved["y"], **(kwargs | {"lr": moved["lr"]})))
    want = oracle([p.clone().requires_grad_() for p in case["params"]], case["x"], case["y"], order=1, **kwargs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w.detach(), **tolerances(torch.float32))


def test_zero_steps_returns_params_per_task(backend):
    case = on(backend, sample_inputs()[0] | {"steps": 0})
    adapted = ops.inner_loop(case["params"], case["x"], case["y"], steps=0, lr=0.1)
    for a, p in zip(adapted, case["params"]):
        torch.testing.assert_close(a, p.expand(case["x"].shape[0], *p.shape))


def small_f64(loss, activation, meta_sgd, order, steps=3, seed=3):
    rng = random.Random(seed)
    return make_case(rng, T=2, K=3, widths=[2, 3, 3], steps=steps, loss=loss, activation=activation,
                     meta_sgd=meta_sgd, dtype=torch.float64, order=order)


@pytest.mark.parametrize("loss,activation", [("mse", "tanh"), ("cross_entropy", "relu"), ("cross_entropy", "tanh")])
def test_gradcheck_second_order(backend, loss, activation):
    case = on(backend, small_f64(loss, activation, meta_sgd=True, order=2))
    params, lr = leaves(case)
    n = len(params)

    def fn(*flat):
        return tuple(ops.inner_loop(list(flat[:n]), case["x"], case["y"], steps=3, lr=list(flat[n:]),
                                    loss=loss, activation=activation, order=2))

    assert torch.autograd.gradcheck(fn, (*params, *lr))


def test_gradcheck_first_order_lr(backend):
    # With one step, d(theta_1)/d(lr) = -grad(theta_0) exactly, so the first-order
    # lr gradient is the true derivative and gradcheck applies.
    case = on(backend, small_f64("cross_entropy", "tanh", meta_sgd=True, order=1, steps=1))
    _, lr = leaves(case)

    def fn(*rates):
        return tuple(ops.inner_loop(case["params"], case["x"], case["y"], steps=1, lr=list(rates),
                                    loss="cross_entropy", activation="tanh", order=1))

    assert torch.autograd.gradcheck(fn, tuple(lr))


def test_first_order_differs_from_exact(backend):
    # Guards against order=1 silently computing the exact gradient (or vice versa).
    case = on(backend, small_f64("mse", "tanh", meta_sgd=False, order=1))
    grads = []
    for order in (1, 2):
        params, _ = leaves(case)
        adapted = ops.inner_loop(params, case["x"], case["y"], steps=3, lr=0.5, activation="tanh", order=order)
        grads.append(torch.autograd.grad(sum(a.sum() for a in adapted), params))
    assert not torch.allclose(grads[0][0], grads[1][0])


def test_double_backward_raises(backend):
    if backend == "reference":
        pytest.skip("the reference is plain autograd and supports higher derivatives")
    case = on(backend, small_f64("mse", "relu", meta_sgd=False, order=2))
    params, _ = leaves(case)
    adapted = ops.inner_loop(params, case["x"], case["y"], steps=2, lr=0.1)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(sum(a.sum() for a in adapted), params, create_graph=True)


def opcheck_args(case):
    lr = case["lr"]
    lr_list = [a.requires_grad_() for a in lr] if isinstance(lr, list) else []
    params = [p.clone().requires_grad_() for p in case["params"]]
    loss_code = 0 if case["loss"] == "mse" else 1
    act_code = 0 if case["activation"] == "relu" else 1
    aux = 2 if case["order"] == 2 else (1 if lr_list else 0)
    return (params, case["x"], case["y"], lr_list, 0.0 if lr_list else lr, case["steps"], loss_code, act_code, aux)


@pytest.mark.parametrize("case", sample_inputs(4, seed=7), ids=lambda c: f"{c['loss']}-o{c['order']}")
def test_opcheck(backend, case):
    if backend == "reference":
        pytest.skip("opcheck applies to the registered C++ op")
    torch.library.opcheck(torch.ops.mtl_deploy.inner_loop.default, opcheck_args(on(backend, case)))


def test_torch_compile_sees_the_op(backend):
    if backend == "reference":
        pytest.skip("checks the registered C++ op under torch.compile")
    case = on(backend, small_f64("mse", "tanh", meta_sgd=False, order=2))
    args = opcheck_args(case)
    fn = torch.compile(lambda *a: torch.ops.mtl_deploy.inner_loop(*a)[0], backend="aot_eager", fullgraph=True)
    adapted = fn(*args)
    want = ops.inner_loop_reference(case["params"], case["x"], case["y"], steps=3, lr=0.05, activation="tanh")
    for got, expected in zip(adapted, want):
        torch.testing.assert_close(got, expected)
    sum(a.sum() for a in adapted).backward()  # the registered autograd runs under compile
    assert all(p.grad is not None for p in args[0])


# Bad-input cases: name -> (mutation of a valid case, expected message).
BAD = {
    "x wrong rank": (lambda c: c | {"x": c["x"][0]}, "x must be"),
    "mismatched T": (lambda c: c | {"y": c["y"][:1]}, "y must be"),
    "non-contiguous x": (lambda c: c | {"x": c["x"].transpose(0, 1)}, "contiguous"),
    "wrong dtype": (lambda c: c | {"x": c["x"].float()}, "dtype"),
    "labels out of range": (lambda c: c | {"y": torch.full_like(c["y"], 99)}, r"\[0, 3\)|0 <= id < 3"),
    "negative steps": (lambda c: c | {"steps": -1}, "steps"),
    "W shape": (lambda c: c | {"params": [c["params"][0].t().contiguous(), *c["params"][1:]]}, r"params\[0\]"),
    "lr shape": (lambda c: c | {"lr": [a[:1] for a in c["lr"]]}, r"lr\[0\]"),
    "unknown loss": (lambda c: c | {"loss": "hinge"}, "loss"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_inputs_raise(backend, name):
    mutation, message = BAD[name]
    case = mutation(on(backend, small_f64("cross_entropy", "relu", meta_sgd=True, order=2)))
    with pytest.raises((ValueError, RuntimeError), match=message):
        ops.inner_loop(case["params"], case["x"], case["y"], steps=case["steps"], lr=case["lr"],
                       loss=case["loss"], activation=case["activation"])


@pytest.mark.parametrize("name", ["x wrong rank", "mismatched T", "non-contiguous x", "labels out of range", "negative steps"])
def test_kernel_checks_its_own_arguments(backend, name):
    # Direct torch.ops calls skip the Python checks; the C++ side must still raise.
    if backend == "reference":
        pytest.skip("checks the C++ op called directly")
    mutation, _ = BAD[name]
    case = mutation(on(backend, small_f64("cross_entropy", "relu", meta_sgd=True, order=2)))
    args = list(opcheck_args(case))
    with pytest.raises(RuntimeError):
        torch.ops.mtl_deploy.inner_loop(*args)
