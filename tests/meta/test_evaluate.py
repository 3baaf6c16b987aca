"""Evaluation statistics: the mean and CI leave diverged tasks out and count them."""

import math

import torch

from mtl_deploy.meta.evaluate import summarize


def test_diverged_tasks_are_counted_not_averaged():
    values = torch.tensor([0.5, 0.7, 40.0, float("nan")])
    losses = torch.tensor([0.5, 0.7, 40.0, float("nan")])
    unadapted = torch.tensor([2.0, 2.0, 2.0, 2.0])
    row = summarize("maml", "10", "mse", values, losses, unadapted)
    assert row.diverged == 2 and row.episodes == 4
    assert math.isclose(row.mean, 0.6, rel_tol=1e-6) and row.median == 0.5
    assert math.isclose(row.ci95, 1.96 * math.sqrt(0.02) / math.sqrt(2), rel_tol=1e-5)  # sample std of 0.5, 0.7
