"""Annotated task-by-task heatmaps as PNG files (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

from mtl_deploy.figures import pyplot, save_png


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
    save_png(figure, path, dpi=110)
