"""PNG figures without a display: matplotlib on its Agg backend, written atomically."""

from __future__ import annotations

from pathlib import Path

from mtl_deploy.errors import MtlDeployError


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
    """Write `figure` to `path` under a temporary name first, then close it."""
    from matplotlib import pyplot as plt

    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    figure.tight_layout()
    figure.savefig(temporary, format="png", dpi=dpi)
    plt.close(figure)
    temporary.replace(path)
    return path
