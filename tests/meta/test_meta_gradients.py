"""The meta-gradients the learners produce equal autograd through the unrolled inner loop
written in plain PyTorch, one task at a time (float64), on both kernel backends."""

import zlib

import pytest
import torch
import torch.nn.functional as F

from mtl_deploy import ops
from mtl_deploy.config import MetaConfig
from mtl_deploy.data.episodes import Episodes
from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.meta.learners import make_learner
from mtl_deploy.models.fewshot import FewShotModel


@pytest.fixture(params=["cpp", "reference"])
def backend(request, monkeypatch):
    monkeypatch.setenv("MTL_DEPLOY_BACKEND", request.param)
    if ops.backend() != request.param:
        pytest.skip(f"the {request.param} backend is not available here")
    return request.param


def unrolled_query_loss(params, rates, episodes, kind, activation, steps, first_order):
    """Plain PyTorch: per task, `steps` SGD steps with autograd, then the query loss."""
    def forward(theta, x):
        h = x
        for i in range(0, len(theta), 2):
            h = F.linear(h, theta[i], theta[i + 1])
            if i + 2 < len(theta):
                h = torch.relu(h) if activation == "relu" else torch.tanh(h)
        return h

    def loss(out, y):
        return F.mse_loss(out, y) if kind == "regression" else F.cross_entropy(out, y)

    total = 0.0
    for t in range(episodes.tasks):
        theta = list(params)
        for _ in range(steps):
            grads = torch.autograd.grad(loss(forward(theta, episodes.support_x[t]), episodes.support_y[t]), theta,
                                        create_graph=not first_order)
            if first_order:
                grads = [g.detach() for g in grads]
            theta = [p - r * g for p, r, g in zip(theta, rates, grads)]
        total = total + loss(forward(theta, episodes.query_x[t]), episodes.query_y[t])
    return total / episodes.tasks


def set_random_rates(model: FewShotModel, gen: torch.Generator) -> None:
    """Meta-SGD: distinct learned rates per element, so a mix-up of rates would show."""
    if model.inner_lrs is not None:
        with torch.no_grad():
            for rate in model.inner_lrs:
                rate.copy_(0.05 + 0.1 * torch.rand(rate.shape, generator=gen, dtype=torch.float64))


def random_targets(kind: str, tasks: int, n: int, classes: int, gen: torch.Generator) -> torch.Tensor:
    if kind == "regression":
        return torch.randn(tasks, n, 2, generator=gen, dtype=torch.float64)
    return torch.randint(classes, (tasks, n), generator=gen)


CASES = [("maml", "regression", "relu"), ("maml", "multiclass", "tanh"), ("fomaml", "regression", "tanh"),
         ("fomaml", "multiclass", "relu"), ("metasgd", "regression", "relu"), ("metasgd", "multiclass", "tanh")]


@pytest.mark.parametrize("algorithm, kind, activation", CASES)
def test_meta_gradient_equals_unrolled_autograd(backend, algorithm, kind, activation):
    gen = torch.Generator().manual_seed(zlib.crc32(f"{algorithm}-{kind}-{activation}".encode()) % 1000)  # same every run
    tasks, shots, queries, width, classes, steps = 3, 4, 5, 6, 3, 3
    task = TaskSpec("y", "regression", 2) if kind == "regression" else TaskSpec("y", "multiclass", classes)
    torch.manual_seed(0)
    model = FewShotModel((5,), task, {"type": "mlp", "hidden": [width, width], "activation": activation},
                         learned_lr=algorithm == "metasgd").double()
    set_random_rates(model, gen)

    def targets(n):
        return random_targets(kind, tasks, n, classes, gen)

    episodes = Episodes(torch.randn(tasks, shots, 5, generator=gen, dtype=torch.float64), targets(shots),
                        torch.randn(tasks, queries, 5, generator=gen, dtype=torch.float64), targets(queries))
    learner = make_learner(MetaConfig(algorithm=algorithm, inner_steps=steps, inner_lr=0.1))
    learner.outer_step(model, episodes)
    library = [p.grad.clone() for p in model.parameters()]

    params = model.adapted_parameters()
    rates = list(model.inner_lrs) if model.inner_lrs is not None else [0.1] * len(params)
    oracle_loss = unrolled_query_loss(params, rates, episodes, kind, activation, steps, algorithm == "fomaml")
    oracle = torch.autograd.grad(oracle_loss, list(model.parameters()), allow_unused=True)
    for name, got, want in zip([n for n, _ in model.named_parameters()], library, oracle):
        if algorithm == "fomaml" and name.startswith("inner_lrs"):
            continue
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("algorithm, kind", [("maml", "multiclass"), ("fomaml", "regression"),
                                             ("metasgd", "multiclass")])
def test_convnet_meta_gradient_equals_unrolled_autograd(algorithm, kind):
    """A whole ConvNet adapts through torch.func (vmapped over tasks): its meta-gradient
    equals autograd through the plain per-task loop on the same network."""
    gen = torch.Generator().manual_seed(7)
    tasks, shots, queries, classes, steps = 3, 4, 3, 3, 2
    task = TaskSpec("y", "regression", 2) if kind == "regression" else TaskSpec("y", "multiclass", classes)
    torch.manual_seed(0)
    model = FewShotModel((1, 6, 6), task, {"type": "conv", "channels": [3, 4], "norm": "none"},
                         learned_lr=algorithm == "metasgd").double()
    set_random_rates(model, gen)

    def targets(n):
        return random_targets(kind, tasks, n, classes, gen)

    episodes = Episodes(torch.randn(tasks, shots, 1, 6, 6, generator=gen, dtype=torch.float64), targets(shots),
                        torch.randn(tasks, queries, 1, 6, 6, generator=gen, dtype=torch.float64), targets(queries))
    make_learner(MetaConfig(algorithm=algorithm, inner_steps=steps, inner_lr=0.1)).outer_step(model, episodes)
    library = [p.grad.clone() for p in model.parameters()]

    network = torch.nn.Sequential(model.trunk, model.head)
    names = [n for n, _ in network.named_parameters()]
    rates = list(model.inner_lrs) if model.inner_lrs is not None else [0.1] * len(names)

    def loss(theta, x, y):
        out = torch.func.functional_call(network, dict(zip(names, theta)), (model.normalize(x),))
        return F.mse_loss(out, y) if kind == "regression" else F.cross_entropy(out, y)

    total = 0.0
    for t in range(tasks):
        theta = list(model.adapted_parameters())
        for _ in range(steps):
            grads = torch.autograd.grad(loss(theta, episodes.support_x[t], episodes.support_y[t]), theta,
                                        create_graph=algorithm != "fomaml")
            theta = [p - r * (g.detach() if algorithm == "fomaml" else g) for p, r, g in zip(theta, rates, grads)]
        total = total + loss(theta, episodes.query_x[t], episodes.query_y[t])
    oracle = torch.autograd.grad(total / tasks, list(model.parameters()), allow_unused=True)
    for name, got, want in zip([n for n, _ in model.named_parameters()], library, oracle):
        if algorithm == "fomaml" and name.startswith("inner_lrs"):
            continue
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("algorithm, calls", [("maml", 1), ("metasgd", 1), ("anil", 0)])
def test_mlp_meta_training_runs_the_fused_meta_step(monkeypatch, algorithm, calls):
    """A whole MLP's outer step is one ops.maml_step call; ANIL adapts a head through inner_loop."""
    seen = []
    real = ops.maml_step
    monkeypatch.setattr(ops, "maml_step", lambda *a, **k: seen.append(1) or real(*a, **k))
    torch.manual_seed(0)
    model = FewShotModel((5,), TaskSpec("y", "regression", 2), {"type": "mlp", "hidden": [6]},
                         learned_lr=algorithm == "metasgd")
    gen = torch.Generator().manual_seed(0)
    episodes = Episodes(torch.randn(3, 4, 5, generator=gen), torch.randn(3, 4, 2, generator=gen),
                        torch.randn(3, 2, 5, generator=gen), torch.randn(3, 2, 2, generator=gen))
    loss = make_learner(MetaConfig(algorithm=algorithm, inner_steps=2, inner_lr=0.1)).outer_step(model, episodes)
    assert len(seen) == calls and loss > 0
    assert all(p.grad is not None for p in model.adapted_parameters()[-2:])
