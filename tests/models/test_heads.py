"""Stacked task heads: every scheme runs its heads through ops.multihead_linear in training
and serving, equal to one Linear per task; routed forwards; per-head checkpoints load."""

import json

import onnx
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import mtl_deploy
from mtl_deploy import ops
from mtl_deploy.atomic import sha256_file
from mtl_deploy.data import DEFAULT_TASKS, TaskSpec
from mtl_deploy.errors import InputError
from mtl_deploy.models import build_multitask

TRUNK = {"type": "mlp", "hidden": [8, 6], "activation": "tanh"}
SHARINGS = {
    "hard": {"scheme": "hard"},
    "soft": {"scheme": "soft"},
    "hierarchical": {"scheme": "hierarchical", "groups": [["price", "churn"], ["demand", "risk", "segment"]]},
    "cross_stitch": {"scheme": "cross_stitch"},
    "mmoe": {"scheme": "mmoe", "experts": 3},
}
SAME_SIZE = [TaskSpec("a", "regression", 3), TaskSpec("b", "regression", 3), TaskSpec("c", "regression", 3)]


@pytest.fixture
def op_calls(monkeypatch):
    """Records the head_ids argument of every ops.multihead_linear call."""
    calls = []
    real = ops.multihead_linear

    def counting(x, weight, bias, head_ids=None):
        calls.append(head_ids)
        return real(x, weight, bias, head_ids)

    monkeypatch.setattr(ops, "multihead_linear", counting)
    return calls


def per_head_reference(model, x):
    """The heads as separate Linear layers on the scheme's own features."""
    features = model.task_features(x)
    out = {}
    for stack in model.heads.stacks.values():
        for i, name in enumerate(stack.names):
            f = features if isinstance(features, torch.Tensor) else features[name]
            out[name] = F.linear(f, stack.weight[i], stack.bias[i])
    return out


def build(scheme, tasks=DEFAULT_TASKS):
    torch.manual_seed(0)
    groups = {"hierarchical": {"groups": [[t.name for t in tasks[:1]], [t.name for t in tasks[1:]]]}}
    return build_multitask((7,), list(tasks), TRUNK, SHARINGS[scheme] | groups.get(scheme, {}))


@pytest.mark.parametrize("scheme", sorted(SHARINGS))
def test_training_and_serving_go_through_the_op_and_equal_per_head_linears(backend, scheme, op_calls):
    device = "cuda" if backend == "cuda" else "cpu"
    model = build(scheme).train().to(device)
    x = torch.randn(6, 7, generator=torch.Generator().manual_seed(1)).to(device)
    outputs = model(x)
    assert op_calls, "training forward did not call ops.multihead_linear"
    expected = per_head_reference(model, x)
    assert list(outputs) == model.task_names
    params = list(model.parameters())
    grads = torch.autograd.grad(sum(o.square().sum() for o in outputs.values()), params)
    want = torch.autograd.grad(sum(o.square().sum() for o in expected.values()), params)
    for name in model.task_names:
        torch.testing.assert_close(outputs[name], expected[name])
    for got, ref in zip(grads, want):
        torch.testing.assert_close(got, ref)
    op_calls.clear()
    with torch.no_grad():
        served = model.eval()(x)
    assert op_calls, "serving forward did not call ops.multihead_linear"
    for name in model.task_names:
        torch.testing.assert_close(served[name], expected[name])


@pytest.mark.parametrize("scheme", sorted(SHARINGS))
def test_routed_forward_uses_the_routed_kernel(backend, scheme, op_calls):
    device = "cuda" if backend == "cuda" else "cpu"
    model = build(scheme, SAME_SIZE).eval().to(device)
    x = torch.randn(7, 7, generator=torch.Generator().manual_seed(2)).to(device)
    ids = torch.tensor([2, 0, 1, 1, 0, 2, 2], device=device)
    routed = model(x, task_ids=ids)
    assert any(call is ids for call in op_calls)
    every = torch.stack([model(x)[name] for name in model.task_names], dim=1)  # (B, H, C)
    torch.testing.assert_close(routed, every[torch.arange(7), ids])


def test_routed_forward_needs_one_output_size():
    model = build("hard")
    with pytest.raises(InputError, match="one output size"):
        model(torch.randn(2, 7), task_ids=torch.tensor([0, 1]))


def test_heads_keep_the_initial_weights_of_separate_linears():
    torch.manual_seed(3)
    trunk = torch.nn.Linear(7, 6)
    separate = [torch.nn.Linear(6, t.out_dim) for t in DEFAULT_TASKS]
    torch.manual_seed(3)
    model = build_multitask((7,), list(DEFAULT_TASKS), {"type": "mlp", "hidden": [6]})
    assert torch.equal(model.trunk.layers[0].weight, trunk.weight)
    for task, linear in zip(DEFAULT_TASKS, separate):
        stack = model.heads.stacks[f"out{task.out_dim}"]
        i = stack.names.index(task.name)
        assert torch.equal(stack.weight[i], linear.weight) and torch.equal(stack.bias[i], linear.bias)


def per_head_state(model):
    """The state dict as models with one nn.Linear per task wrote it: heads.<task>.weight."""
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("heads.")}
    for stack in model.heads.stacks.values():
        for i, name in enumerate(stack.names):
            state[f"heads.{name}.weight"] = stack.weight[i].detach().clone()
            state[f"heads.{name}.bias"] = stack.bias[i].detach().clone()
    return state


@pytest.mark.parametrize("scheme", ["hard", "mmoe"])
def test_per_head_checkpoint_loads_and_exports_with_parity(scheme, tmp_path):
    model = build(scheme).eval()
    path = mtl_deploy.save(model, tmp_path / "ckpt")
    # Rewrite the weights in the per-head layout, as earlier versions saved them.
    save_file({k: v.contiguous() for k, v in per_head_state(model).items()}, path / "weights.safetensors")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["weights.safetensors"] = manifest["content_hash"] = sha256_file(path / "weights.safetensors")
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert any(k.startswith("heads.price.") for k in per_head_state(model))

    loaded = mtl_deploy.load(path)
    x = torch.randn(5, 7)
    with torch.no_grad():
        for name, out in model(x).items():
            assert torch.equal(loaded(x)[name], out)
    report = mtl_deploy.export(path, tmp_path / "export")
    assert report.parity.passed and report.manifest["parity"]["passed"]
    graph = onnx.load(tmp_path / "export" / "model.onnx").graph
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}  # no custom op in the artifact


def test_serving_follows_weight_changes_and_tracing_sees_the_parameters():
    """Serving without gradients runs every head as one cached concatenated stack; the cache
    follows in-place updates and device/dtype moves, and a trace records the parameters."""
    model = build("hard").eval()
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        first = model(x)
        for stack in model.heads.stacks.values():
            stack.weight.mul_(-2.0)  # an in-place update, as an optimizer step makes
        second = model(x)
        expected = per_head_reference(model, x)
        for name in model.task_names:
            assert not torch.allclose(first[name], second[name])
            torch.testing.assert_close(second[name], expected[name])
        model.double()
        doubled = model(x.double())
        assert all(doubled[name].dtype == torch.float64 for name in model.task_names)
        traced = torch.jit.trace(model, x, strict=False)
    stack = next(iter(model.heads.stacks.values()))
    with torch.no_grad():
        stack.weight.add_(1.0)
        for name, value in model(x.double()).items():
            torch.testing.assert_close(traced(x.double())[name], value)
