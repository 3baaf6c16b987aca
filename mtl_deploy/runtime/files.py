"""Batch prediction from files: rows from `.npy` or `.csv`, predictions to `.npz` or
`.csv`, written under a temporary name and renamed. numpy only, like the predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtl_deploy.atomic import atomic_file
from mtl_deploy.errors import InputError
from mtl_deploy.runtime.predictor import Predictor


def read_rows(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file {str(path)!r} does not exist; give a .npy or .csv of rows")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".csv":
            first = path.read_text().splitlines()[:1]
            has_header = bool(first) and any(c.strip() and not _is_number(c) for c in first[0].split(","))
            return np.atleast_2d(np.loadtxt(path, delimiter=",", skiprows=int(has_header), dtype=np.float32))
    except ValueError as err:
        raise InputError(f"{path} could not be read as numbers ({err})") from None
    raise InputError(f"{path}: unknown input type {path.suffix!r}; use .npy or .csv")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_predictions(predictions: dict[str, np.ndarray], path: str | Path) -> None:
    """`.npz`: one array per task; `.csv`: one column per task output (task, or task_j)."""
    path = Path(path)
    if path.suffix not in (".npz", ".csv"):
        raise InputError(f"{path}: unknown output type {path.suffix!r}; use .npz or .csv")
    with atomic_file(path) as staging:
        if path.suffix == ".npz":
            np.savez(staging, **predictions)
        else:
            columns = [(name if value.shape[1] == 1 else f"{name}_{j}", value[:, j])
                       for name, value in predictions.items() for j in range(value.shape[1])]
            np.savetxt(staging, np.column_stack([c for _, c in columns]), delimiter=",",
                       header=",".join(n for n, _ in columns), comments="", fmt="%.7g")


def predict_file(export_dir: str | Path, input_path: str | Path, task: str | None = None,
                 output_path: str | Path | None = None) -> dict[str, np.ndarray]:
    predictor = Predictor(export_dir)
    result = predictor.predict(read_rows(input_path), task)
    predictions = {task: result} if task else result
    if output_path is not None:
        write_predictions(predictions, output_path)
    return predictions
