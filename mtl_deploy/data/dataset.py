"""The multi-task dataset: one input tensor, one target tensor per task, and its split.

Every row carries a target for every task (joint labels), which is what a shared trunk
trains on. Normalisation statistics are computed on the training split only and travel
with the model, so the exported graph takes raw features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.errors import InputError


def split_rows(rows: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random (train, validation) row indices, at least one row on each side."""
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    n_val = max(1, round(rows * val_fraction))
    if n_val >= rows:
        raise InputError(f"{rows} rows are too few to hold out {val_fraction:.0%} for validation")
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))
    return order[n_val:], order[:n_val]


@dataclass
class MultiTaskDataset:
    """Inputs `x` (N, *input_shape) and `targets[task.name]` prepared per `tasks`."""

    x: torch.Tensor
    targets: dict[str, torch.Tensor]
    tasks: list[TaskSpec]

    def __post_init__(self):
        if self.x.ndim < 2:
            raise InputError(f"inputs must be (rows, features...), got shape {tuple(self.x.shape)}")
        if len(self.x) == 0:
            raise InputError("the dataset has no rows")
        if not torch.isfinite(self.x).all():
            bad = int((~torch.isfinite(self.x)).flatten(1).any(1).sum())
            raise InputError(f"inputs contain NaN or inf in {bad} row(s); clean or drop those rows")
        self.x = self.x.to(torch.float32)
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise InputError(f"task names must be unique, got {names}")
        missing = [n for n in names if n not in self.targets]
        if missing:
            raise InputError(f"no targets for task(s) {missing}; the data has {sorted(self.targets)}")
        prepared = {}
        for task in self.tasks:
            values = self.targets[task.name]
            if len(values) != len(self.x):
                raise InputError(f"task {task.name!r} has {len(values)} targets for {len(self.x)} input rows")
            prepared[task.name] = task.prepare_target(values)
        self.targets = prepared

    def __len__(self) -> int:
        return len(self.x)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The inputs and every task's targets of the rows `index`."""
        return self.x[index], {name: values[index] for name, values in self.targets.items()}

    def subset(self, index: torch.Tensor) -> "MultiTaskDataset":
        return MultiTaskDataset(self.x[index], {k: v[index] for k, v in self.targets.items()}, self.tasks)

    def select_tasks(self, names: list[str]) -> "MultiTaskDataset":
        """The same rows with only the named tasks (single-task baselines use this)."""
        known = {t.name: t for t in self.tasks}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InputError(f"unknown task(s) {unknown}; this data has {sorted(known)}")
        return MultiTaskDataset(self.x, {n: self.targets[n] for n in names}, [known[n] for n in names])

    def split(self, val_fraction: float, seed: int) -> tuple["MultiTaskDataset", "MultiTaskDataset"]:
        """A seeded random train/validation split."""
        train, val = split_rows(len(self), val_fraction, seed)
        return self.subset(train), self.subset(val)


def normalization_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std per feature (vectors) or per channel (images, (N, C, H, W)).

    Returned shaped to broadcast against one input row; a constant feature gets std 1
    so normalising never divides by zero.
    """
    dims = (0,) if x.ndim == 2 else (0, *range(2, x.ndim))
    mean = x.mean(dim=dims, keepdim=True)[0]
    std = x.std(dim=dims, keepdim=True, unbiased=False)[0]
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return mean, std


class UserDataset:
    """A user's `torch.utils.data.Dataset` as multi-task training data, read lazily: item i
    is `(inputs, targets)`, inputs a tensor, tuple or dict of tensors (what the model takes),
    targets a dict task name -> value. Minibatches are collated as a DataLoader would."""

    def __init__(self, dataset, tasks: list[TaskSpec], index: torch.Tensor | None = None):
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise InputError(f"training data must be a map-style torch Dataset (with __len__ and __getitem__), "
                             f"got {type(dataset).__name__}")
        self.dataset, self.tasks = dataset, list(tasks)
        self.index = torch.arange(len(dataset)) if index is None else index
        if len(self.index) == 0:
            raise InputError("the dataset has no rows")

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, index: torch.Tensor) -> tuple[object, dict[str, torch.Tensor]]:
        items = [self.dataset[int(i)] for i in self.index[index]]
        if not all(isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], dict) for item in items):
            raise InputError("each dataset item must be (inputs, {task name: target})")
        inputs, targets = torch.utils.data.default_collate(items)
        missing = [t.name for t in self.tasks if t.name not in targets]
        if missing:
            raise InputError(f"dataset items have no targets for task(s) {missing}; they have {sorted(targets)}")
        return inputs, {t.name: t.prepare_target(torch.as_tensor(targets[t.name])) for t in self.tasks}

    def split(self, val_fraction: float, seed: int) -> tuple["UserDataset", "UserDataset"]:
        """A seeded random train/validation split of the items."""
        train, val = split_rows(len(self), val_fraction, seed)
        return UserDataset(self.dataset, self.tasks, self.index[train]), UserDataset(self.dataset, self.tasks, self.index[val])
