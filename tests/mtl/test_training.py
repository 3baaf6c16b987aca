"""Joint training: reproducible, early-stopping, metrics computed right, and sharing helps
on related tasks of the synthetic family."""

import torch

from mtl_deploy.data import TaskSpec, synthetic_family
from mtl_deploy.mtl import EqualWeighting, evaluate, fit, macro_f1, task_metrics
from tests.conftest import quick_config


def test_same_seed_same_weights():
    data = synthetic_family(n_rows=80, seed=1)
    first = fit(data, quick_config(epochs=5), progress=False)
    second = fit(data, quick_config(epochs=5), progress=False)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)


def test_early_stopping_restores_the_best_epoch():
    config = quick_config(epochs=300)
    config.train.patience = 5
    fitted = fit(synthetic_family(n_rows=80, seed=2), config, progress=False)
    result = fitted.result
    assert result.epochs_run < 300
    assert result.epochs_run == result.best_epoch + 5
    best = min(h["val_loss"] for h in result.history)
    assert abs(evaluate(fitted.model, fitted.val)[0] - best) < 1e-5


def test_metrics_match_hand_computation():
    pred_logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    target = torch.tensor([0, 1, 2, 2])
    metrics = task_metrics(TaskSpec("c", "multiclass", 3), pred_logits, target)
    assert metrics["accuracy"] == 0.75
    # per class F1: class 0 = 1, class 1 = 2/3, class 2 = 2/3
    assert abs(metrics["macro_f1"] - (1 + 2 / 3 + 2 / 3) / 3) < 1e-9
    assert macro_f1(torch.tensor([1, 1]), torch.tensor([1, 1]), 2) == 1.0
    regression = task_metrics(TaskSpec("r", "regression"), torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [2.0]]))
    assert regression == {"mse": 1.0, "mae": 1.0}


def test_equal_weighting_sums_task_losses():
    assert EqualWeighting()({"a": torch.tensor(1.5), "b": torch.tensor(2.0)}) == 3.5
