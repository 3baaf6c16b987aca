"""Batch prediction from files: rows from `.npy` or `.csv`, predictions to `.npz` or
`.csv`, written under a temporary name and renamed. numpy only, like the predictor."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from mtl_deploy_runtime.atomic import atomic_file
from mtl_deploy_runtime.errors import InputError
from mtl_deploy_runtime.predictor import Predictor
from mtl_deploy_runtime.csv_reader import read_table


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


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def task_columns(name: str, values: np.ndarray, kind: str, logits: bool = False) -> dict[str, np.ndarray]:
    """One task's output as named columns: a class task's label and its probability (the
    raw values with `logits`), a regression task's values (`task`, or `task_j`)."""
    if kind == "multiclass" and not logits:
        probabilities = _softmax(values.astype(np.float64))
        return {name: probabilities.argmax(1), f"{name}_probability": probabilities.max(1)}
    if kind == "binary" and not logits:
        probability = 1.0 / (1.0 + np.exp(-values[:, 0].astype(np.float64)))
        return {name: (probability > 0.5).astype(np.int64), f"{name}_probability": probability}
    flat = values.reshape(len(values), -1)
    if flat.shape[1] == 1:
        return {name: flat[:, 0]}
    return {f"{name}_{j}": flat[:, j] for j in range(flat.shape[1])}


def prediction_table(predictions: dict[str, np.ndarray], tasks: dict, logits: bool = False,
                     task_ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Column name -> values: every task's columns (see `task_columns`), or for a routed
    mixed batch (`task_ids`) each row's task, its label or value, and its probability."""
    if task_ids is None:
        return {column: values for name, output in predictions.items()
                for column, values in task_columns(name, output, tasks[name]["kind"], logits).items()}
    (output,) = predictions.values()
    names = sorted(tasks, key=lambda n: tasks[n]["id"])
    label, probability = np.zeros(len(output)), np.full(len(output), np.nan)
    for row, task_id in enumerate(task_ids):
        spec = tasks[names[task_id]]
        own = output[row:row + 1, :spec["out_dim"]]
        columns = list(task_columns("v", own, spec["kind"], logits).values())
        label[row] = columns[0][0]
        if len(columns) == 2:
            probability[row] = columns[1][0]
    return {"task": np.array(names, dtype=object)[task_ids], "prediction": label, "probability": probability}


def _cell(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return "" if np.isnan(value) else f"{value:.6g}"


def table_text(table: dict[str, np.ndarray]) -> str:
    """The table as CSV text: a header, then one line per row."""
    rows = zip(*table.values())
    return "\n".join([",".join(table), *(",".join(_cell(v) for v in row) for row in rows)]) + "\n"


def write_predictions(predictions: dict[str, np.ndarray], path: str | Path, table: dict[str, np.ndarray]) -> None:
    """`.npz`: the raw arrays, one per output; `.csv`: `table`'s columns; `.json`: one
    object per row of `table`."""
    path = Path(path)
    if path.suffix not in (".npz", ".csv", ".json"):
        raise InputError(f"{path}: unknown output type {path.suffix!r}; use .csv, .json or .npz")
    with atomic_file(path) as staging:
        if path.suffix == ".npz":
            np.savez(staging, **predictions)
        elif path.suffix == ".csv":
            staging.write_text(table_text(table))
        else:
            rows = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in zip(table, row)}
                    for row in zip(*(c.tolist() for c in table.values()))]
            staging.write_text(json.dumps(rows, indent=1) + "\n")


def _task_id_column(spec: str, table) -> tuple[np.ndarray, np.ndarray]:
    """(rows, task ids): the CSV's other columns as inputs, the column `spec` as ids."""
    if spec not in table.header:
        raise InputError(f"--task-ids {spec!r} is neither an .npy file nor a column of {table.path}")
    at = table.header.index(spec)
    return (table.numbers([i for i in range(table.width) if i != at], dtype=np.float32),
            table.numbers([at])[:, 0])


def _whole_ids(ids) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or (ids.dtype.kind == "f" and not np.array_equal(ids, np.round(ids))):
        raise InputError("task ids must be one whole number per row")
    return ids.astype(np.int64)


def predict_file(export_dir: str | Path, input_path: str | Path, task: str | None = None,
                 output_path: str | Path | None = None, header: bool | None = None, logits: bool = False,
                 task_ids: str | Path | None = None, device: str = "auto") -> dict[str, np.ndarray]:
    """Predict the rows of a file on `device` (see `Predictor`); write them to `output_path`
    when given. Returns the table of readable columns (see `prediction_table`). A routed
    export takes `task_ids`: an `.npy` of ids, or the name of a column of the CSV input (left
    out of the inputs)."""
    predictor = Predictor(export_dir, device=device)
    input_path = Path(input_path)
    ids = None
    if task_ids is not None and Path(task_ids).suffix == ".npy":
        rows, ids = read_rows(input_path, header), _whole_ids(read_rows(task_ids))
    elif task_ids is not None:
        if input_path.suffix != ".csv":
            raise InputError("--task-ids takes an .npy file of task ids, or a column name of a .csv input")
        rows, column = _task_id_column(str(task_ids), read_table(input_path, header=True))  # one read of the file
        ids = _whole_ids(column)
    else:
        rows = read_rows(input_path, header)
    result = predictor.predict(rows, task, task_ids=ids) if ids is not None else predictor.predict(rows, task)
    predictions = {task or predictor.manifest["outputs"][0]["name"]: result} if not isinstance(result, dict) else result
    table = prediction_table(predictions, predictor.tasks, logits, ids)
    if output_path is not None:
        write_predictions(predictions, output_path, table)
    return table
