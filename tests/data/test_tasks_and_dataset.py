"""Task specs, the dataset type, normalisation statistics and the split."""

import pytest
import torch
import torch.nn.functional as F

from mtl_deploy.data import MultiTaskDataset, TaskSpec, normalization_stats
from mtl_deploy.errors import InputError


def test_each_kind_uses_its_loss():
    out = torch.randn(6, 3)
    assert torch.equal(TaskSpec("r", "regression", 3).loss(out, out + 1), torch.tensor(1.0))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.allclose(TaskSpec("c", "multiclass", 3).loss(out, labels), F.cross_entropy(out, labels))
    flags = torch.tensor([0, 1, 1, 0, 1, 0])
    assert torch.allclose(TaskSpec("b", "binary").loss(out[:, :1], flags),
                          F.binary_cross_entropy_with_logits(out[:, 0], flags.float()))


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "t", "kind": "ranking"}, "unknown kind"),
    ({"name": "t", "kind": "binary", "out_dim": 2}, "out_dim 1"),
    ({"name": "t", "kind": "multiclass", "out_dim": 1}, "out_dim >= 2"),
    ({"name": "", "kind": "regression"}, "non-empty"),
])
def test_bad_task_specs_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        TaskSpec(**kwargs)


def test_labels_out_of_range_name_the_task():
    with pytest.raises(InputError, match=r"'segment'.*\[0, 3\]"):
        TaskSpec("segment", "multiclass", 4).prepare_target(torch.tensor([0.0, 4.0]))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_and_targets_are_refused(bad):
    x = torch.randn(5, 3)
    y = torch.randn(5)
    x_bad = x.clone()
    x_bad[2, 1] = bad
    with pytest.raises(InputError, match="NaN or inf in 1 row"):
        MultiTaskDataset(x_bad, {"y": y}, [TaskSpec("y", "regression")])
    y[0] = bad
    with pytest.raises(InputError, match="'y': targets contain NaN or inf"):
        MultiTaskDataset(x, {"y": y}, [TaskSpec("y", "regression")])


def test_missing_task_targets_and_row_mismatch():
    x = torch.randn(4, 2)
    with pytest.raises(InputError, match=r"no targets for task\(s\) \['b'\]"):
        MultiTaskDataset(x, {"a": torch.randn(4)}, [TaskSpec("a", "regression"), TaskSpec("b", "regression")])
    with pytest.raises(InputError, match="3 targets for 4 input rows"):
        MultiTaskDataset(x, {"a": torch.randn(3)}, [TaskSpec("a", "regression")])


def test_split_is_seeded_disjoint_and_complete():
    data = MultiTaskDataset(torch.arange(20.0).reshape(10, 2), {"a": torch.arange(10.0)}, [TaskSpec("a", "regression")])
    train, val = data.split(0.3, seed=4)
    again, _ = data.split(0.3, seed=4)
    assert (len(train), len(val)) == (7, 3)
    assert torch.equal(train.x, again.x)
    rows = sorted(train.x[:, 0].tolist() + val.x[:, 0].tolist())
    assert rows == data.x[:, 0].tolist()
    with pytest.raises(InputError, match="val_fraction"):
        data.split(1.5, seed=0)


def test_normalization_per_feature_and_per_channel():
    x = torch.randn(100, 3) * torch.tensor([1.0, 5.0, 0.0]) + 2
    mean, std = normalization_stats(x)
    assert torch.allclose(mean, x.mean(0))
    assert std[2] == 1.0  # constant feature: no division by zero
    images = torch.randn(8, 2, 4, 4) * 3
    mean, std = normalization_stats(images)
    assert mean.shape == (2, 1, 1)
    assert torch.allclose(std.flatten(), images.transpose(0, 1).reshape(2, -1).std(1, unbiased=False))
