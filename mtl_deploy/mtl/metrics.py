"""Per-task validation metrics: MSE and MAE for regression, accuracy and macro-F1 for
classification. `PRIMARY` names the metric each kind is judged by, and its direction;
`delta_m` is the average relative improvement over single-task baselines (LibMTL's Δm)."""

from __future__ import annotations

import torch

from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.errors import InputError

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


HIGHER_IS_BETTER = {"mse": False, "mae": False, "accuracy": True, "macro_f1": True}


def delta_m(base_result: dict[str, list[float]], new_result: dict[str, list[float]],
            higher_better: dict[str, list[int | bool]]) -> float:
    """Δm, LibMTL's `count_improvement`: the mean over tasks of the mean over each task's
    metrics of (-1)^w (B - N) / B, with B the baseline (single-task) score, N the new one,
    and w = 1 where higher is better. A fraction: 0.05 means 5% better on average.

    Each argument maps task -> one value per metric, in the same order.
    """
    if set(base_result) != set(new_result) or set(base_result) != set(higher_better) or not base_result:
        raise InputError(f"delta_m needs the same tasks in all three arguments; got {sorted(base_result)}, "
                         f"{sorted(new_result)} and {sorted(higher_better)}")
    per_task = []
    for task, base in base_result.items():
        new, higher = new_result[task], higher_better[task]
        if not len(base) == len(new) == len(higher):
            raise InputError(f"task {task!r}: give one value and one direction per metric")
        per_task.append(sum((1 if h else -1) * (n - b) / b for b, n, h in zip(base, new, higher)) / len(base))
    return sum(per_task) / len(per_task)


def delta_m_of_metrics(single_task: dict[str, dict[str, float]], multi_task: dict[str, dict[str, float]]) -> float:
    """Δm of multi-task metrics against single-task baselines, both task -> `task_metrics`
    output; every metric a task reports counts (MSE and MAE, or accuracy and macro-F1)."""
    names = {task: sorted(metrics) for task, metrics in single_task.items()}
    return delta_m({t: [single_task[t][m] for m in ms] for t, ms in names.items()},
                   {t: [multi_task[t][m] for m in ms] for t, ms in names.items()},
                   {t: [HIGHER_IS_BETTER[m] for m in ms] for t, ms in names.items()})
