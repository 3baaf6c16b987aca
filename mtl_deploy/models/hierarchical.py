"""Hierarchical sharing: a bottom trunk shared by every task, middle layers shared within a
task group, then one head per task. The groups come from the config (for instance the
groups `task relations` suggests)."""

from __future__ import annotations

import torch
from torch import nn

from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.errors import InputError
from mtl_deploy.models.multitask import MultiTaskBase
from mtl_deploy.models.trunks import MLPTrunk, build_trunk


def check_groups(groups: list[list[str]] | None, names: list[str]) -> list[list[str]]:
    """`groups` as lists of task names covering every task exactly once (one group if None)."""
    if groups is None:
        return [list(names)]
    flat = [name for group in groups for name in group]
    if sorted(flat) != sorted(names) or any(not group for group in groups):
        raise InputError(f"model.sharing.groups must split the tasks {names} into non-empty groups, each task "
                         f"once; got {groups}")
    return [list(group) for group in groups]


class HierarchicalModel(MultiTaskBase):
    """Shared bottom `trunk` -> per-group MLP `group_hidden` -> per-task heads."""

    architecture = "hierarchical"

    def __init__(self, input_shape: tuple[int, ...], tasks: list[TaskSpec], trunk: dict | None = None,
                 groups: list[list[str]] | None = None, group_hidden: list[int] | None = None):
        super().__init__(input_shape, tasks)
        self.groups = check_groups(groups, self.task_names)
        self.trunk = build_trunk(trunk or {"type": "mlp"}, self.input_shape)
        activation = getattr(self.trunk, "activation", "relu")
        self.middles = nn.ModuleList([MLPTrunk(self.trunk.out_features, list(group_hidden or [32]), activation)
                                      for _ in self.groups])
        self.heads = self.task_heads(self.middles[0].out_features)
        self.group_of = {name: g for g, group in enumerate(self.groups) for name in group}

    def task_features(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        bottom = self.trunk(self.normalize(x))  # (B, hidden) shared by every task
        middle = [layers(bottom) for layers in self.middles]  # per group: (B, group_hidden[-1])
        if len(middle) == 1:
            return middle[0]  # one group: every head reads the same features
        return {name: middle[self.group_of[name]] for name in self.task_names}

    def scheme_config(self) -> dict:
        return {"trunk": self.trunk.config(), "groups": self.groups, "group_hidden": self.middles[0].hidden}
