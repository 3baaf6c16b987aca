"""Evaluation statistics: the mean and CI leave diverged tasks out and count them; paired
differences between methods on the same episodes."""

import math

import pytest
import torch

from mtl_deploy.meta.evaluate import paired_difference, summarize
from mtl_deploy.tables import evaluation_table


def test_diverged_tasks_are_counted_not_averaged():
    values = torch.tensor([0.5, 0.7, 40.0, float("nan")])
    losses = torch.tensor([0.5, 0.7, 40.0, float("nan")])
    unadapted = torch.tensor([2.0, 2.0, 2.0, 2.0])
    row = summarize("maml", "10", "mse", values, losses, unadapted)
    assert row.diverged == 2 and row.episodes == 4
    assert math.isclose(row.mean, 0.6, rel_tol=1e-6) and row.median == 0.5
    assert math.isclose(row.ci95, 1.96 * math.sqrt(0.02) / math.sqrt(2), rel_tol=1e-5)  # sample std of 0.5, 0.7


def test_paired_difference_sees_a_small_gap_that_overlapping_cis_hide():
    generator = torch.Generator().manual_seed(0)
    difficulty = torch.rand(600, generator=generator)  # shared by both methods, episode to episode
    base = summarize("scratch", "100", "accuracy", difficulty, torch.zeros(600))
    better = summarize("protonet", "-", "accuracy", difficulty + 0.01 + 0.002 * torch.randn(600, generator=generator),
                       torch.zeros(600))
    assert better.mean - better.ci95 < base.mean + base.ci95  # the unpaired CIs overlap
    difference, ci = paired_difference(better, base)
    assert abs(difference - 0.01) < 1e-3 and 0 < ci < 0.001
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference(better, summarize("x", "-", "accuracy", difficulty[:10], torch.zeros(10)))


def test_evaluation_table_gives_each_row_its_paired_difference_from_scratch():
    values = torch.tensor([0.6, 0.8, 1.0, 0.4])
    rows = [summarize("protonet", "-", "accuracy", values + 0.2, torch.zeros(4)),
            summarize("scratch", "100", "accuracy", values, torch.zeros(4))]
    lines = evaluation_table(rows).splitlines()
    assert lines[0].endswith("vs scratch (paired)")
    assert lines[2].split()[0] == "protonet" and lines[2].endswith("+0.2000 ± 0.0000")
    assert lines[3].split()[0] == "scratch" and lines[3].endswith("4")  # no difference from itself
    assert evaluation_table(rows[:1]).splitlines()[2].endswith(" 4")  # without a scratch row the column stays empty
