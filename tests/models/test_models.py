"""Trunks and the multi-task container: outputs per task, rebuilt from config alone."""

import pytest
import torch

from mtl_deploy.data import DEFAULT_TASKS, TaskSpec
from mtl_deploy.errors import MtlDeployError
from mtl_deploy.models import MultiTaskModel, build_model


@pytest.mark.parametrize("input_shape, trunk", [
    ((7,), {"type": "mlp", "hidden": [16, 8], "activation": "tanh"}),
    ((1, 9, 9), {"type": "conv", "channels": [4, 6]}),
])
def test_forward_returns_one_output_per_task(input_shape, trunk):
    model = MultiTaskModel(input_shape, list(DEFAULT_TASKS), trunk).eval()
    outputs = model(torch.randn(5, *input_shape))
    assert list(outputs) == [t.name for t in DEFAULT_TASKS]
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {t.name: (5, t.out_dim) for t in DEFAULT_TASKS}


def test_rebuilt_from_config_computes_the_same():
    model = MultiTaskModel((7,), [TaskSpec("a", "regression", 2)], {"type": "mlp", "hidden": [5]}).eval()
    model.set_normalization(torch.full((7,), 2.0), torch.full((7,), 3.0))
    twin = build_model(model.config()).eval()
    twin.load_state_dict(model.state_dict())
    x = torch.randn(4, 7)
    assert torch.equal(model(x)["a"], twin(x)["a"])


def test_normalization_is_applied_inside_the_model():
    torch.manual_seed(0)
    model = MultiTaskModel((2,), [TaskSpec("a", "regression")], {"type": "mlp", "hidden": [3]}).eval()
    plain = build_model(model.config()).eval()
    plain.load_state_dict(model.state_dict())  # the same weights, statistics 0 and 1
    model.set_normalization(torch.tensor([10.0, -5.0]), torch.tensor([2.0, 4.0]))
    raw = torch.tensor([[12.0, -1.0], [10.0, -5.0]])
    standardised = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert torch.allclose(model(raw)["a"], plain(standardised)["a"])  # forward standardises its raw input
    assert not torch.allclose(model(raw)["a"], plain(raw)["a"])


def test_unknown_architecture_and_trunk():
    with pytest.raises(MtlDeployError, match="unknown architecture 'transformer'"):
        build_model({"architecture": "transformer"})
    with pytest.raises(ValueError, match="unknown trunk type"):
        MultiTaskModel((3,), [TaskSpec("a", "regression")], {"type": "rnn"})
    with pytest.raises(ValueError, match="conv trunk takes"):
        MultiTaskModel((3,), [TaskSpec("a", "regression")], {"type": "conv"})
