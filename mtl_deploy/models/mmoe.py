"""Multi-gate mixture of experts (Ma et al. 2018): several expert trunks shared by all
tasks, and per task a softmax gate on the input that mixes the experts' features."""

from __future__ import annotations

import math

import torch
from torch import nn

from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.errors import InputError
from mtl_deploy.models.multitask import MultiTaskBase
from mtl_deploy.models.trunks import build_trunk


class MMoEModel(MultiTaskBase):
    """`experts` copies of `trunk`; gate_t(x) = softmax(W_t x + b_t) over experts."""

    architecture = "mmoe"

    def __init__(self, input_shape: tuple[int, ...], tasks: list[TaskSpec], trunk: dict | None = None,
                 experts: int = 4):
        super().__init__(input_shape, tasks)
        if experts < 1:
            raise InputError(f"mmoe needs at least one expert, got experts={experts}")
        self.experts = nn.ModuleList([build_trunk(trunk or {"type": "mlp"}, self.input_shape) for _ in range(experts)])
        self.gates = nn.ModuleDict({t.name: nn.Linear(math.prod(self.input_shape), experts) for t in self.tasks})
        self.heads = self.task_heads(self.experts[0].out_features)

    def task_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.normalize(x)
        features = torch.stack([expert(z) for expert in self.experts], dim=1)  # (B, E, D)
        flat = z.flatten(1)  # (B, F) what the gates read
        mixed = {}
        for name in self.task_names:
            gate = torch.softmax(self.gates[name](flat), dim=-1)  # (B, E) mixture weights
            mixed[name] = (gate.unsqueeze(-1) * features).sum(dim=1)  # (B, D)
        return mixed

    def scheme_config(self) -> dict:
        return {"trunk": self.experts[0].config(), "experts": len(self.experts)}
