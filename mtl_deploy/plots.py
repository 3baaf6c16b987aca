"""Every PNG the project writes, headless (matplotlib's Agg backend) and atomically: a
run's training curves and the task-by-task heatmaps of `analyze`."""

from __future__ import annotations

from pathlib import Path

from mtl_deploy.atomic import atomic_file
from mtl_deploy.errors import MtlDeployError

LOWER_IS_BETTER = ("mse", "mae", "loss")  # metric names; the others (accuracy, macro_f1) go up


def pyplot(what: str):
    """matplotlib.pyplot on the Agg backend; `what` names the figures in the error."""
    try:
        import matplotlib
    except ImportError:
        raise MtlDeployError(f"{what} need matplotlib; install it with: pip install matplotlib") from None
    matplotlib.use("Agg")  # no display: the figure only goes to a file
    from matplotlib import pyplot as plt

    return plt


def save_png(figure, path: str | Path, dpi: int) -> Path:
    """Write `figure` to `path` (temporary name, then rename) and close it."""
    from matplotlib import pyplot as plt

    path = Path(path)
    try:
        with atomic_file(path) as staging:
            figure.savefig(staging, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(figure)
    return path


def plot_curves(records: list[dict], path: str | Path) -> Path | None:
    """A run's curves from its metrics-log lines: the losses, then one panel per direction
    of the per-task validation metrics (lower is better, higher is better), against epochs
    (multi-task runs) or steps (meta-learning), with the restored best marked; None when
    there is nothing to plot."""
    losses = [r for r in records if r.get("train_loss") is not None or r.get("val_loss") is not None]
    if not losses:
        return None
    plt = pyplot("training curves")
    axis_key = "epoch" if all("epoch" in r for r in losses) else "step"
    metrics = sorted({(task, name) for r in records for task, values in r.get("val_metrics", {}).items()
                      for name in values})
    panels = [("loss", "loss (lower is better)", None)]
    for direction, lower in (("lower is better", True), ("higher is better", False)):
        chosen = [m for m in metrics if (m[1] in LOWER_IS_BETTER) == lower]
        if chosen:
            panels.append((direction, f"validation metrics ({direction})", chosen))
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 1.5, 4), squeeze=False)
    validated = [r for r in losses if r.get("val_loss") is not None]
    best = min(validated, key=lambda r: r["val_loss"])[axis_key] if validated else None
    for axis, (_, title, chosen) in zip(axes[0], panels):
        if chosen is None:
            for key, label in (("train_loss", "training loss"), ("val_loss", "validation loss")):
                points = [(r[axis_key], r[key]) for r in losses if r.get(key) is not None]
                if points:
                    axis.plot(*zip(*points), marker=".", label=label)
            if all(r[k] > 0 for r in losses for k in ("train_loss", "val_loss") if r.get(k) is not None):
                axis.set_yscale("log")
        else:
            for task, name in chosen:
                points = [(r[axis_key], r["val_metrics"][task][name]) for r in records
                          if name in r.get("val_metrics", {}).get(task, {})]
                axis.plot(*zip(*points), marker=".", label=f"{task} {name}")
        if best is not None:
            axis.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"restored best ({axis_key} {best})")
        axis.set(xlabel=axis_key, title=title)
        axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    figure.tight_layout()
    return save_png(figure, path, dpi=100)


def write_heatmap(path: Path, matrix: list[list[float]], names: list[str], title: str,
                  limits: tuple[float, float]) -> None:
    """Write `matrix` (T, T) as a heatmap with a labelled cell per task pair to `path`."""
    plt = pyplot("heatmaps")
    size = 1.2 + 0.7 * len(names)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    image = axes.imshow(matrix, cmap="RdBu_r" if limits[0] < 0 else "viridis", vmin=limits[0], vmax=limits[1])
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                      color="white" if abs(value) > 0.6 * max(abs(limits[0]), abs(limits[1])) else "black")
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    save_png(figure, path, dpi=110)
