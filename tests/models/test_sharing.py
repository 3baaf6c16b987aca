"""Sharing schemes: one interface, a config away from each other, rebuilt from JSON alone,
and the soft-sharing penalties computed right."""

import pytest
import torch

import mtl_deploy
from mtl_deploy.data import DEFAULT_TASKS, TaskSpec
from mtl_deploy.errors import InputError
from mtl_deploy.models import SCHEMES, SoftSharingModel, build_model, build_multitask

TRUNK = {"type": "mlp", "hidden": [8, 6], "activation": "tanh"}
SHARINGS = {
    "hard": {"scheme": "hard"},
    "soft": {"scheme": "soft", "coupling": "trace_norm", "strength": 0.1},
    "hierarchical": {"scheme": "hierarchical", "groups": [["price", "churn"], ["demand", "risk", "segment"]],
                     "group_hidden": [5]},
    "cross_stitch": {"scheme": "cross_stitch", "self_weight": 0.8},
    "mmoe": {"scheme": "mmoe", "experts": 3},
}


def test_every_scheme_is_covered():
    assert set(SHARINGS) == set(SCHEMES)


@pytest.mark.parametrize("scheme", sorted(SHARINGS))
def test_one_output_per_task_and_rebuilt_from_config(scheme, tmp_path):
    torch.manual_seed(0)
    model = build_multitask((7,), list(DEFAULT_TASKS), TRUNK, SHARINGS[scheme]).eval()
    model.set_normalization(torch.full((7,), 1.0), torch.full((7,), 2.0))
    x = torch.randn(5, 7)
    outputs = model(x)
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {t.name: (5, t.out_dim) for t in DEFAULT_TASKS}
    twin = build_model(model.config()).eval()
    twin.load_state_dict(model.state_dict())
    loaded = mtl_deploy.load(mtl_deploy.save(model, tmp_path / "ckpt"))
    for name in model.task_names:
        assert torch.equal(outputs[name], twin(x)[name]) and torch.equal(outputs[name], loaded(x)[name])


def test_hard_sharing_config_is_unchanged():
    model = build_multitask((3,), [TaskSpec("a", "regression")], {"type": "mlp", "hidden": [4]})
    assert model.config()["architecture"] == "multitask" and set(model.config()) == {
        "architecture", "input_shape", "tasks", "trunk"}


def test_soft_sharing_penalties():
    tasks = [TaskSpec("a", "regression"), TaskSpec("b", "regression")]
    l2 = SoftSharingModel((3,), tasks, {"type": "mlp", "hidden": [2]}, "l2", 1.0)
    trunk_b = l2.trunks["b"]
    trunk_b.load_state_dict(l2.trunks["a"].state_dict())
    assert l2.regularization() == 0  # identical trunks cost nothing
    with torch.no_grad():
        trunk_b.layers[0].bias += torch.tensor([1.0, 0.0])
    # each task sits 0.5 from the mean in one coordinate: 2 * 0.5² = 0.5
    torch.testing.assert_close(l2.regularization(), torch.tensor(0.5))
    trace = SoftSharingModel((3,), tasks, {"type": "mlp", "hidden": [2]}, "trace_norm", 1.0)
    expected = sum(torch.linalg.svdvals(torch.stack([pa.flatten(), pb.flatten()])).sum()
                   for pa, pb in zip(trace.trunks["a"].parameters(), trace.trunks["b"].parameters()))
    torch.testing.assert_close(trace.regularization(), expected)


def test_bad_sharing_configs_name_the_fix():
    tasks = list(DEFAULT_TASKS)
    with pytest.raises(InputError, match="unknown sharing scheme"):
        build_multitask((7,), tasks, TRUNK, {"scheme": "towers"})
    with pytest.raises(InputError, match="groups must split the tasks"):
        build_multitask((7,), tasks, TRUNK, {"scheme": "hierarchical", "groups": [["price"], ["price", "demand"]]})
    with pytest.raises(InputError, match="use model.trunk.type 'mlp'"):
        build_multitask((1, 8, 8), tasks, {"type": "conv"}, {"scheme": "cross_stitch"})
    with pytest.raises(InputError, match="unknown soft-sharing coupling"):
        build_multitask((7,), tasks, TRUNK, {"scheme": "soft", "coupling": "l1"})
    with pytest.raises(InputError, match="bad option in model.sharing"):
        build_multitask((7,), tasks, TRUNK, {"scheme": "mmoe", "gates": 2})
