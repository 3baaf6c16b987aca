"""Δm follows LibMTL's convention; distillation trains a student from single-task teachers
and reports its gap to each."""

import pytest
import torch

from mtl_deploy.data import TaskSpec, synthetic_family
from mtl_deploy.errors import InputError
from mtl_deploy.mtl import delta_m, delta_m_of_metrics, distill, train_teachers
from mtl_deploy.mtl.distill import distillation_loss
from tests.conftest import quick_config


def test_delta_m_reproduces_libmtl_count_improvement_example():
    base = {"A": [96, 98], "B": [0.2]}
    new = {"A": [93, 99], "B": [0.5]}
    higher_better = {"A": [1, 0], "B": [1]}
    assert round(delta_m(base, new, higher_better), 4) == 0.7396


def test_delta_m_of_metrics_signs_each_metric_by_its_direction():
    single = {"r": {"mse": 1.0, "mae": 1.0}, "c": {"accuracy": 0.5, "macro_f1": 0.5}}
    multi = {"r": {"mse": 0.5, "mae": 0.5}, "c": {"accuracy": 0.75, "macro_f1": 0.75}}
    assert delta_m_of_metrics(single, multi) == pytest.approx(0.5)
    assert delta_m_of_metrics(single, single) == 0.0
    with pytest.raises(InputError, match="same tasks"):
        delta_m({"a": [1.0]}, {"b": [1.0]}, {"a": [0]})


def test_distillation_loss_vanishes_when_the_student_copies_the_teacher():
    logits = torch.randn(6, 3)
    for task, out in [(TaskSpec("c", "multiclass", 3), logits), (TaskSpec("r", "regression", 3), logits)]:
        assert distillation_loss(task, out, out.clone(), 2.0).abs() < 1e-6
    binary = TaskSpec("b", "binary")
    same = distillation_loss(binary, logits[:, :1], logits[:, :1], 2.0)
    other = distillation_loss(binary, -logits[:, :1], logits[:, :1], 2.0)
    assert other > same


def test_student_learns_from_teachers_and_reports_the_gaps():
    data = synthetic_family(n_rows=120, seed=4)
    holdout = synthetic_family(n_rows=300, seed=4, split="holdout")
    config = quick_config(epochs=15)
    teachers = train_teachers(data, config)
    result = distill(teachers, data, config, holdout, alpha=0.7)
    assert set(result.gaps) == set(teachers) == {t.name for t in data.tasks}
    price = result.student_metrics["price"]["mse"] - result.teacher_metrics["price"]["mse"]
    assert result.gaps["price"] == pytest.approx(price)
    assert all(abs(gap) < 0.5 for gap in result.gaps.values())  # the student tracks its teachers
    with pytest.raises(InputError, match="no teacher for task"):
        distill({"price": teachers["price"]}, data, config, holdout)
