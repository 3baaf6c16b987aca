"""Distillation: one multi-task student learns from several single-task teachers.

Each task's training loss mixes the teacher's outputs with the labels:
`alpha · distillation loss + (1 − alpha) · label loss`. Distillation targets are the
teacher's soft targets for classification (KL divergence at `temperature`, times T² so
gradients keep their scale; sigmoid probabilities for binary tasks) and the teacher's
predictions for regression. The result reports the student's gap to each teacher on the
task's primary metric, on held-out rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mtl_deploy.config import RunConfig
from mtl_deploy.data.dataset import MultiTaskDataset, normalization_stats
from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.errors import InputError
from mtl_deploy.models.multitask import MultiTaskBase
from mtl_deploy.models.sharing import build_multitask
from mtl_deploy.mtl.fit import fit
from mtl_deploy.mtl.joint import TrainResult, evaluate, train_multitask
from mtl_deploy.mtl.metrics import PRIMARY


@dataclass
class Distilled:
    student: MultiTaskBase
    result: TrainResult
    teacher_metrics: dict[str, dict[str, float]]  # task -> held-out metrics of its teacher
    student_metrics: dict[str, dict[str, float]]
    gaps: dict[str, float]  # task -> how far the student trails its teacher on the primary metric (< 0: ahead)


def train_teachers(data: MultiTaskDataset, config: RunConfig, progress: bool = False) -> dict[str, nn.Module]:
    """One single-task model per task of `data`, each trained as `config` says."""
    return {t.name: fit(data.select_tasks([t.name]), config, progress).model for t in data.tasks}


def distillation_loss(task: TaskSpec, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """The student's loss against its teacher's raw outputs (values or logits)."""
    if task.kind == "regression":
        return F.mse_loss(student, teacher)
    if task.kind == "multiclass":
        return F.kl_div(F.log_softmax(student / temperature, dim=1), F.log_softmax(teacher / temperature, dim=1),
                        reduction="batchmean", log_target=True) * temperature**2
    return F.binary_cross_entropy_with_logits(student / temperature, torch.sigmoid(teacher / temperature)) * temperature**2


def trailing_gap(task: TaskSpec, student: dict[str, float], teacher: dict[str, float]) -> float:
    """Teacher minus student on the primary metric, signed so that positive means worse."""
    name, direction = PRIMARY[task.kind]
    return student[name] - teacher[name] if direction == "lower" else teacher[name] - student[name]


@torch.no_grad()
def _teacher_outputs(teachers: dict[str, nn.Module], x: torch.Tensor) -> dict[str, torch.Tensor]:
    outputs = {}
    for name, teacher in teachers.items():
        teacher.eval()
        outputs[name] = teacher(x)[name]
    return outputs


def distill(teachers: dict[str, nn.Module], data: MultiTaskDataset, config: RunConfig, holdout: MultiTaskDataset,
            *, alpha: float = 0.5, temperature: float = 2.0, progress: bool = False) -> Distilled:
    """Train a student of `config.model`'s scheme on `data`'s tasks from `teachers`
    (task name -> a model whose output dict holds that task), then compare on `holdout`."""
    missing = [t.name for t in data.tasks if t.name not in teachers]
    if missing:
        raise InputError(f"no teacher for task(s) {missing}; give one model per task")
    if not 0.0 <= alpha <= 1.0 or temperature <= 0:
        raise InputError(f"distillation needs 0 <= alpha <= 1 and temperature > 0, got {alpha}, {temperature}")
    train, val = data.split(config.data.val_fraction, config.train.seed)
    torch.manual_seed(config.train.seed)
    student = build_multitask(data.input_shape, data.tasks, config.model.trunk, config.model.sharing)
    student.set_normalization(*normalization_stats(train.x))
    soft = _teacher_outputs(teachers, train.x)  # task -> (N_train, out) teacher outputs on every training row

    def task_losses(outputs: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
        device = next(iter(outputs.values())).device  # the student's (train.device): the CPU's rows go there
        return {t.name: alpha * distillation_loss(t, outputs[t.name], soft[t.name][rows].to(device), temperature)
                + (1 - alpha) * t.loss(outputs[t.name], train.targets[t.name][rows].to(device)) for t in data.tasks}

    result = train_multitask(student, train, val, config.train, progress, task_losses)
    _, student_metrics = evaluate(student, holdout)
    teacher_metrics = {t.name: evaluate(teachers[t.name], holdout.select_tasks([t.name]))[1][t.name] for t in data.tasks}
    gaps = {t.name: trailing_gap(t, student_metrics[t.name], teacher_metrics[t.name]) for t in data.tasks}
    return Distilled(student, result, teacher_metrics, student_metrics, gaps)
