"""The multi-task model interface, and hard sharing: input normalisation, a shared trunk,
one named head per task.

`forward(x)` returns `dict[str, Tensor]` (task name -> raw head output: values for
regression, logits for classification); `forward(x, task_ids=ids)` is the routed forward,
(B, C) with row i through task `ids[i]`'s head (heads of one output size). Normalisation
statistics are buffers, so they are saved with the weights and baked into every export.
"""

from __future__ import annotations

import torch
from torch import nn

from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.models.heads import Features, TaskHeads
from mtl_deploy.models.trunks import build_trunk


class Normalize(nn.Module):
    """(x - mean) / std with statistics fixed at training time."""

    def __init__(self, input_shape: tuple[int, ...], mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        stat_shape = (input_shape[0], *[1] * (len(input_shape) - 1))  # per feature, or per channel for images
        self.register_buffer("mean", torch.zeros(stat_shape) if mean is None else mean.reshape(stat_shape).float())
        self.register_buffer("std", torch.ones(stat_shape) if std is None else std.reshape(stat_shape).float())

    def set(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Fix the statistics (computed on a training split) in place."""
        self.mean.copy_(mean.reshape(self.mean.shape))
        self.std.copy_(std.reshape(self.std.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MultiTaskBase(nn.Module):
    """What every sharing scheme has in common, and what the exporter and checkpoints rely
    on: `input_shape`, `tasks`, `task_names`, the `normalize` buffers, the stacked task
    heads in `heads`, `forward(x) -> dict[str, Tensor]`, and `config()` / `from_config`
    where the config holds `architecture`, `input_shape`, `tasks` and the scheme's own
    keyword arguments. A scheme says what its heads read in `task_features`."""

    architecture = "base"

    def __init__(self, input_shape: tuple[int, ...], tasks: list[TaskSpec]):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.tasks = list(tasks)
        self.normalize = Normalize(self.input_shape)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.normalize.set(mean, std)

    def task_heads(self, width: int) -> TaskHeads:
        """One linear head per task on `width` features, stacked per output size."""
        return TaskHeads(width, self.tasks)

    def task_features(self, x: torch.Tensor) -> Features:
        """What the heads read: (B, D) shared by every task, or task name -> (B, D)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor | None = None):
        """Task name -> output for every task; with `task_ids` (B,) int64, the routed
        (B, C) output, row i from task `task_ids[i]` (index in `task_names`)."""
        features = self.task_features(x)
        return self.heads(features) if task_ids is None else self.heads.routed(features, task_ids)

    def scheme_config(self) -> dict:
        """The scheme's constructor keyword arguments, JSON-serialisable."""
        raise NotImplementedError

    def config(self) -> dict:
        return {"architecture": self.architecture, "input_shape": list(self.input_shape),
                "tasks": [t.to_dict() for t in self.tasks], **self.scheme_config()}

    @classmethod
    def from_config(cls, config: dict) -> "MultiTaskBase":
        options = {k: v for k, v in config.items() if k not in ("architecture", "input_shape", "tasks")}
        return cls(tuple(config["input_shape"]), [TaskSpec.from_dict(t) for t in config["tasks"]], **options)


class MultiTaskModel(MultiTaskBase):
    """Hard parameter sharing: every task reads the same trunk features."""

    architecture = "multitask"

    def __init__(self, input_shape: tuple[int, ...], tasks: list[TaskSpec], trunk: dict | None = None):
        super().__init__(input_shape, tasks)
        self.trunk = build_trunk(trunk or {"type": "mlp"}, self.input_shape)
        self.heads = self.task_heads(self.trunk.out_features)

    def task_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.normalize(x))  # (B, hidden) shared by every head

    def scheme_config(self) -> dict:
        return {"trunk": self.trunk.config()}
