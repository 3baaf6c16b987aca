"""Cross-stitch networks (Misra et al. 2016): one MLP column per task, and after every
layer a learned (T, T) unit that mixes the columns' activations, so the model learns how
much each task reads from the others."""

from __future__ import annotations

import math

import torch
from torch import nn

from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.errors import InputError
from mtl_deploy.models.multitask import MultiTaskBase
from mtl_deploy.models.trunks import make_activation


class CrossStitchModel(MultiTaskBase):
    """Columns of Linear + activation layers of widths `trunk["hidden"]`; cross-stitch
    units start at `self_weight` on the diagonal and share the rest evenly."""

    architecture = "cross_stitch"

    def __init__(self, input_shape: tuple[int, ...], tasks: list[TaskSpec], trunk: dict | None = None,
                 self_weight: float = 0.9):
        super().__init__(input_shape, tasks)
        trunk = dict(trunk or {"type": "mlp"})
        if trunk.get("type", "mlp") != "mlp":
            raise InputError("cross-stitch sharing mixes MLP columns; use model.trunk.type 'mlp'")
        self.hidden, self.activation = list(trunk.get("hidden", [64, 64])), trunk.get("activation", "relu")
        self.self_weight = float(self_weight)
        n, width = len(self.tasks), math.prod(self.input_shape)
        self.columns = nn.ModuleList()
        for size in self.hidden:
            self.columns.append(nn.ModuleList([nn.Linear(width, size) for _ in self.tasks]))
            width = size
        off = (1 - self.self_weight) / (n - 1) if n > 1 else 0.0
        start = torch.full((n, n), off) + (self.self_weight - off) * torch.eye(n)  # (T, T) rows sum to 1
        self.stitches = nn.ParameterList([nn.Parameter(start.clone()) for _ in self.hidden])
        self.act = make_activation(self.activation)
        self.heads = self.task_heads(width)

    def task_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.normalize(x).flatten(1)  # (B, F)
        columns = [z for _ in self.tasks]
        for layers, stitch in zip(self.columns, self.stitches):
            h = torch.stack([self.act(layer(c)) for layer, c in zip(layers, columns)])  # (T, B, D)
            mixed = torch.einsum("ts,sbd->tbd", stitch, h)  # (T, B, D) column t reads every column
            columns = list(mixed.unbind(0))
        return dict(zip(self.task_names, columns))  # task t reads column t

    def scheme_config(self) -> dict:
        return {"trunk": {"type": "mlp", "hidden": self.hidden, "activation": self.activation},
                "self_weight": self.self_weight}
