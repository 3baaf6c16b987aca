"""Training curves from a run's metrics log, as one PNG: training and validation loss over
the steps and, when the log has them, each task's validation metrics."""

from __future__ import annotations

from pathlib import Path

from mtl_deploy.figures import pyplot, save_png


def plot_curves(records: list[dict], path: str | Path) -> Path | None:
    """Write the curves of `records` (metrics-log lines) to `path`; None when there is
    nothing to plot."""
    losses = [r for r in records if "train_loss" in r or "val_loss" in r]
    if not losses:
        return None
    plt = pyplot("training curves")
    task_metrics = sorted({(task, name) for r in records for task, values in r.get("val_metrics", {}).items()
                           for name in values})
    figure, axes = plt.subplots(1, 2 if task_metrics else 1, figsize=(11 if task_metrics else 6, 4), squeeze=False)
    loss_axis = axes[0][0]
    for key, label in (("train_loss", "training loss"), ("val_loss", "validation loss")):
        points = [(r["step"], r[key]) for r in losses if r.get(key) is not None]
        if points:
            loss_axis.plot(*zip(*points), marker=".", label=label)
    loss_axis.set(xlabel="step", ylabel="loss", title="loss")
    if all(r.get(k, 1) > 0 for r in losses for k in ("train_loss", "val_loss") if r.get(k) is not None):
        loss_axis.set_yscale("log")
    loss_axis.legend()
    if task_metrics:
        metric_axis = axes[0][1]
        for task, name in task_metrics:
            points = [(r["step"], r["val_metrics"][task][name]) for r in records
                      if name in r.get("val_metrics", {}).get(task, {})]
            metric_axis.plot(*zip(*points), marker=".", label=f"{task} {name}")
        metric_axis.set(xlabel="step", title="validation metrics per task")
        metric_axis.legend(fontsize="small")
    return save_png(figure, path, dpi=100)
