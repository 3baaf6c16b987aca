"""Soft parameter sharing: a trunk of its own per task, the trunks kept close by a penalty
on the differences between corresponding weights.

The penalty lives in `regularization()`, which training adds to the loss; the forward is
plain per-task trunks and heads, so the exported graph holds standard operators only.
"""

from __future__ import annotations

import torch
from torch import nn

from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.errors import InputError
from mtl_deploy.models.multitask import MultiTaskBase
from mtl_deploy.models.trunks import build_trunk

COUPLINGS = ("l2", "trace_norm")


class SoftSharingModel(MultiTaskBase):
    """Per-task trunks coupled by `coupling` with weight `strength`:
    "l2": Σ_layers Σ_t ||θ_t − mean_s θ_s||² (Duong et al. 2015),
    "trace_norm": Σ_layers ||[θ_1; …; θ_T]||_* of the tasks' flattened weights stacked as
    rows (Yang & Hospedales 2017), which pushes the trunks towards a low-rank family."""

    architecture = "soft"

    def __init__(self, input_shape: tuple[int, ...], tasks: list[TaskSpec], trunk: dict | None = None,
                 coupling: str = "l2", strength: float = 1e-3):
        super().__init__(input_shape, tasks)
        if coupling not in COUPLINGS:
            raise InputError(f"unknown soft-sharing coupling {coupling!r}; use one of {', '.join(COUPLINGS)}")
        if strength < 0:
            raise InputError(f"soft-sharing strength must be >= 0, got {strength}")
        self.coupling, self.strength = coupling, float(strength)
        self.trunks = nn.ModuleDict({t.name: build_trunk(trunk or {"type": "mlp"}, self.input_shape) for t in self.tasks})
        self.heads = self.task_heads(next(iter(self.trunks.values())).out_features)

    def task_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.normalize(x)
        return {name: trunk(z) for name, trunk in self.trunks.items()}

    def regularization(self) -> torch.Tensor:
        """The coupling penalty, times `strength` (training loss only)."""
        columns = [list(trunk.parameters()) for trunk in self.trunks.values()]
        total = torch.zeros(())
        for layer in zip(*columns):
            stacked = torch.stack([p.flatten() for p in layer])  # (T, numel) one row per task
            if self.coupling == "l2":
                total = total + (stacked - stacked.mean(0)).pow(2).sum()
            else:
                total = total + torch.linalg.matrix_norm(stacked, ord="nuc")
        return self.strength * total

    def scheme_config(self) -> dict:
        return {"trunk": next(iter(self.trunks.values())).config(), "coupling": self.coupling,
                "strength": self.strength}
