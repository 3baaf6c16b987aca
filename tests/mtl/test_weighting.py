"""Loss weightings: each method's formula, its learning hooks, and config errors."""

import pytest
import torch

from mtl_deploy.errors import InputError
from mtl_deploy.mtl import WEIGHTINGS, make_weighting

LOSSES = {"a": torch.tensor(2.0), "b": torch.tensor(0.5)}


def test_every_weighting_gives_one_term_per_task():
    for name in WEIGHTINGS:
        options = {"weights": {"a": 1.0, "b": 1.0}} if name == "static" else {}
        assert make_weighting(name, ["a", "b"], options).terms(LOSSES).shape == (2,), name


def test_static_and_uncertainty_formulas():
    static = make_weighting("static", ["a", "b"], {"weights": {"a": 0.5, "b": 4.0}})
    assert static(LOSSES) == 0.5 * 2.0 + 4.0 * 0.5
    uncertainty = make_weighting("uncertainty", ["a", "b"])
    with torch.no_grad():
        uncertainty.log_variance.copy_(torch.tensor([0.0, 1.0]))
    expected = 2.0 / 2 + 0.0 + 0.5 / (2 * torch.e) + 0.5
    torch.testing.assert_close(uncertainty(LOSSES), torch.tensor(expected))


def test_dwa_follows_the_loss_ratio_of_the_last_two_epochs():
    dwa = make_weighting("dwa", ["a", "b"], {"temperature": 1.0})
    dwa.epoch_end(torch.tensor([1.0, 1.0]))
    assert torch.equal(dwa.weights, torch.ones(2))  # one epoch of history: still equal
    dwa.epoch_end(torch.tensor([0.5, 1.0]))  # task a halved its loss, b did not move
    expected = 2 * torch.softmax(torch.tensor([0.5, 1.0]), 0)
    torch.testing.assert_close(dwa.weights, expected)
    assert dwa.weights[1] > dwa.weights[0]


def test_random_weighting_is_seeded_and_scaled_to_the_task_count():
    first = make_weighting("random", ["a", "b"], {"seed": 3})
    second = make_weighting("random", ["a", "b"], {"seed": 3})
    ones = {"a": torch.tensor(1.0), "b": torch.tensor(1.0)}
    a, b = first.terms(ones), second.terms(ones)
    assert torch.equal(a, b) and not torch.equal(a, first.terms(ones))
    torch.testing.assert_close(a.sum(), torch.tensor(2.0))


def test_gradnorm_raises_the_weight_of_the_task_with_the_smaller_gradient():
    gradnorm = make_weighting("gradnorm", ["a", "b"])
    losses = torch.tensor([1.0, 1.0])
    jacobian = torch.tensor([[10.0, 0.0], [0.0, 1.0]])  # task a's gradient is 10x larger
    gradnorm.observe(losses, jacobian)
    assert gradnorm.logits.grad[0] > 0 > gradnorm.logits.grad[1]  # descent lowers a, raises b
    torch.testing.assert_close(gradnorm.weights().sum(), torch.tensor(2.0))


def test_config_errors_name_the_fix():
    with pytest.raises(InputError, match="unknown loss weighting 'focal'"):
        make_weighting("focal", ["a"])
    with pytest.raises(InputError, match="exactly the tasks"):
        make_weighting("static", ["a", "b"], {"weights": {"a": 1.0}})
    with pytest.raises(InputError, match="bad train.weighting_options"):
        make_weighting("dwa", ["a"], {"temp": 2.0})
