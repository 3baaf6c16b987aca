"""Loaders for a user's own data: a CSV (feature columns plus one column per task) or an
`.npz` (an `x` array plus one array per task). Neither ever unpickles anything."""

from __future__ import annotations

import reprlib
import zipfile
from pathlib import Path

import numpy as np
import torch

from mtl_deploy.config import DataConfig
from mtl_deploy.data.dataset import MultiTaskDataset
from mtl_deploy.data.synthetic import synthetic_family
from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.errors import InputError
from mtl_deploy.runtime.csv_reader import Table, read_table

SOURCES = ("synthetic", "csv", "npz")  # data.source: the built-in family, or a user's file


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data file {str(path)!r} does not exist; check the path")
    return path


def load_csv(path: str | Path, tasks: list[TaskSpec], feature_columns: list[str] | None = None) -> MultiTaskDataset:
    """Read a CSV with a header row (the rules are `mtl_deploy.runtime.csv_reader`'). Each
    task's targets come from the column of the same name; features are `feature_columns`,
    or every other column when omitted."""
    table = read_table(_existing_file(path), header=True)
    task_names = [t.name for t in tasks]
    features = feature_columns if feature_columns is not None else [h for h in table.header if h not in task_names]
    x = _columns(table, features)
    targets = {t.name: _columns(table, [t.name])[:, 0] for t in tasks}
    return MultiTaskDataset(x, targets, tasks)


def _columns(table: Table, names: list[str]) -> torch.Tensor:
    """(rows, len(names)) float64 values of the named columns."""
    unknown = [n for n in names if n not in table.header]
    if unknown:
        raise InputError(f"{table.path}: no column(s) named {reprlib.repr(unknown)}; "
                         f"the header has {reprlib.repr(table.header)}")
    if not names:
        raise InputError(f"{table.path}: no feature columns left once the task columns are taken")
    index = {name: i for i, name in enumerate(table.header)}
    return torch.from_numpy(table.numbers([index[n] for n in names]))


def load_npz(path: str | Path, tasks: list[TaskSpec], input_key: str = "x") -> MultiTaskDataset:
    """Read an `.npz` holding `input_key` (N, *input_shape) and one (N,) or (N, out) array per task."""
    path = _existing_file(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise InputError(f"{path} is not a readable .npz archive ({err}); re-save it with numpy.savez") from None
    wanted = [input_key, *(t.name for t in tasks)]
    missing = [k for k in wanted if k not in arrays]
    if missing:
        raise InputError(f"{path}: no array(s) named {missing}; the archive has {sorted(arrays)}")
    for key in wanted:
        if arrays[key].dtype.kind not in "biuf":
            raise InputError(f"{path}: array {key!r} has dtype {arrays[key].dtype}; it must be numeric")
    x = torch.from_numpy(arrays[input_key].astype(np.float64))
    targets = {t.name: torch.from_numpy(arrays[t.name].astype(np.float64)) for t in tasks}
    return MultiTaskDataset(x, targets, tasks)


def load_inputs(path: str | Path, input_shape: tuple[int, ...], task_names: list[str]) -> torch.Tensor:
    """Input rows only, from an `.npz` (array `x`) or a CSV (every column that is not a
    task), checked against the model's `input_shape`."""
    path = _existing_file(path)
    if path.suffix == ".npz":
        x = load_npz(path, [], input_key="x").x
    elif path.suffix == ".csv":
        table = read_table(path, header=True)
        x = _columns(table, [h for h in table.header if h not in task_names])
    else:
        raise InputError(f"{path}: unknown data file type {path.suffix!r}; use .npz or .csv")
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise InputError(f"{path} has rows of shape {list(x.shape[1:])} ({x[0].numel()} features); "
                         f"the model takes {list(input_shape)}")
    return x


def tasks_from_config(entries: list[dict]) -> list[TaskSpec]:
    """Task specs from config entries, naming the entry that is malformed."""
    tasks = []
    for entry in entries:
        if not isinstance(entry, dict) or "name" not in entry or "kind" not in entry:
            raise InputError(f"each task needs a 'name' and a 'kind', got {entry!r}")
        tasks.append(TaskSpec.from_dict(entry))
    return tasks


def dataset_from_config(config: DataConfig) -> MultiTaskDataset:
    """The dataset a run configuration describes."""
    if config.source == "synthetic":
        options = dict(config.synthetic)
        if config.tasks:
            options["tasks"] = tuple(tasks_from_config(config.tasks))
        try:
            return synthetic_family(**options)
        except TypeError as err:
            raise InputError(f"[data.synthetic] has an unknown option ({err})") from None
    if config.source not in SOURCES:
        raise InputError(f"unknown data source {config.source!r}; use one of {', '.join(SOURCES)}")
    if not config.path:
        raise InputError(f"data source {config.source!r} needs data.path (or --data FILE)")
    if not config.tasks:
        raise InputError("list the tasks to learn in data.tasks: [{\"name\": COLUMN, \"kind\": ..., \"out_dim\": ...}]")
    tasks = tasks_from_config(config.tasks)
    if config.source == "csv":
        return load_csv(config.path, tasks, config.feature_columns)
    return load_npz(config.path, tasks)
