"""Batch prediction from files: rows from `.npy` or `.csv`, predictions to `.npz` or
`.csv`, written under a temporary name and renamed. numpy only, like the predictor."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from mtl_deploy.atomic import atomic_file
from mtl_deploy.errors import InputError
from mtl_deploy.runtime.predictor import Predictor
from mtl_deploy.runtime.csv_reader import read_table


def read_rows(path: str | Path, header: bool | None = None) -> np.ndarray | dict[str, np.ndarray]:
    """Rows from a `.npy`, from a `.csv` by the rules of `runtime.csv_reader` (`header`: True
    the first row names the columns, False it is data, None detected), or from an `.npz`
    with one array per model input (never unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file {str(path)!r} does not exist; give a .npy, .npz or .csv of rows")
    if path.suffix == ".csv":
        return read_table(path, header).numbers(dtype=np.float32)
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise InputError(f"{path} could not be read as numbers ({str(err)[:160]})") from None
    raise InputError(f"{path}: unknown input type {path.suffix!r}; use .npy, .npz or .csv")


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
                 output_path: str | Path | None = None, header: bool | None = None) -> dict[str, np.ndarray]:
    predictor = Predictor(export_dir)
    result = predictor.predict(read_rows(input_path, header), task)
    predictions = {task: result} if task else result
    if output_path is not None:
        write_predictions(predictions, output_path)
    return predictions
