"""Per-task validation metrics: MSE and MAE for regression, accuracy and macro-F1 for
classification. `PRIMARY` names the metric each kind is judged by, and its direction."""

from __future__ import annotations

import torch

from mtl_deploy.data.tasks import TaskSpec

PRIMARY = {"regression": ("mse", "lower"), "multiclass": ("accuracy", "higher"), "binary": ("accuracy", "higher")}


def macro_f1(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in `target` or `pred`."""
    scores = []
    for c in range(n_classes):
        tp = int(((pred == c) & (target == c)).sum())
        fp = int(((pred == c) & (target != c)).sum())
        fn = int(((pred != c) & (target == c)).sum())
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


def task_metrics(task: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Metrics of one head's `output` (raw values or logits) against prepared targets."""
    if task.kind == "regression":
        err = output - target.reshape(output.shape)
        return {"mse": float(err.pow(2).mean()), "mae": float(err.abs().mean())}
    if task.kind == "multiclass":
        pred, n_classes = output.argmax(dim=1), task.out_dim
    else:
        pred, n_classes = (output.squeeze(-1) > 0).to(torch.int64), 2
    return {"accuracy": float((pred == target).float().mean()), "macro_f1": macro_f1(pred, target, n_classes)}


def is_better(task: TaskSpec, candidate: dict[str, float], reference: dict[str, float]) -> bool:
    """Whether `candidate` beats `reference` on the task's primary metric."""
    name, direction = PRIMARY[task.kind]
    return candidate[name] < reference[name] if direction == "lower" else candidate[name] > reference[name]
