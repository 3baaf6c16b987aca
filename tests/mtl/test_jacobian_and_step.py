"""Per-task gradients in one batched pass equal T separate backward passes; the training
step keeps plain equal-weight training bit for bit and applies aggregation to the shared
parameters only."""

import copy

import torch

from mtl_deploy.data import DEFAULT_TASKS, synthetic_family
from mtl_deploy.models import build_multitask
from mtl_deploy.mtl import aggregate, make_weighting, shared_parameters, task_jacobian
from mtl_deploy.mtl.step import optimisation_step
from mtl_deploy.mtl.joint import train_multitask
from tests.conftest import quick_config

DATA = synthetic_family(n_rows=48, seed=3)


def losses_of(model):
    outputs = model(DATA.x)
    return {t.name: t.loss(outputs[t.name], DATA.targets[t.name]) for t in DATA.tasks}


def model_of(scheme: str):
    torch.manual_seed(0)
    return build_multitask(DATA.input_shape, DATA.tasks, {"type": "mlp", "hidden": [8, 8]}, {"scheme": scheme})


def test_batched_jacobian_equals_separate_backward_passes():
    for scheme in ("hard", "mmoe", "cross_stitch"):
        model = model_of(scheme)
        params = shared_parameters(model)
        losses = torch.stack(list(losses_of(model).values()))
        rows = [torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)]) for loss in losses]
        torch.testing.assert_close(task_jacobian(losses, params), torch.stack(rows), atol=1e-6, rtol=1e-5)


def test_shared_parameters_leave_out_the_heads():
    model = model_of("hard")
    heads = {id(p) for p in model.heads.parameters()}
    assert not heads & {id(p) for p in shared_parameters(model)}
    assert len(shared_parameters(model)) == len(list(model.trunk.parameters()))


def test_default_training_is_the_plain_equal_weight_loop_bit_for_bit():
    config = quick_config(epochs=3).train
    train, val = DATA.split(0.25, 0)
    ours = model_of("hard")
    reference = copy.deepcopy(ours)
    train_multitask(ours, train, val, config, progress=False)
    # the spine's loop, written out: shuffle, sum of task losses, backward, Adam
    torch.manual_seed(config.seed)
    shuffle = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(reference.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best, best_state = float("inf"), None
    for _ in range(config.epochs):
        reference.train()
        order = torch.randperm(len(train), generator=shuffle)
        for start in range(0, len(train), config.batch_size):
            rows = order[start:start + config.batch_size]
            outputs = reference(train.x[rows])
            loss = torch.stack([t.loss(outputs[t.name], train.targets[t.name][rows]) for t in train.tasks]).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        reference.eval()
        with torch.no_grad():
            out = reference(val.x)
            val_loss = sum(float(t.loss(out[t.name], val.targets[t.name])) for t in val.tasks)
        if val_loss < best:
            best, best_state = val_loss, copy.deepcopy(reference.state_dict())
    for key, value in best_state.items():
        assert torch.equal(ours.state_dict()[key], value), key


def test_aggregated_step_writes_the_aggregate_into_shared_grads_and_sums_the_heads():
    model = model_of("hard")
    weighting = make_weighting("equal", [t.name for t in DEFAULT_TASKS])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: inspect the gradients only
    losses = losses_of(model)
    jac = task_jacobian(torch.stack(list(losses.values())), shared_parameters(model), retain_graph=True)
    torch.manual_seed(0)
    expected = aggregate(jac, "pcgrad")
    heads_expected = torch.autograd.grad(sum(losses.values()), list(model.heads.parameters()), retain_graph=True)
    torch.manual_seed(0)
    optimisation_step(model, losses, weighting, optimizer, "pcgrad")
    got = torch.cat([p.grad.flatten() for p in shared_parameters(model)])
    torch.testing.assert_close(got, expected)
    for p, g in zip(model.heads.parameters(), heads_expected):
        torch.testing.assert_close(p.grad, g)
