"""Task specifications: what each head predicts, its output size and its loss."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from mtl_deploy.errors import InputError

TASK_KINDS = ("regression", "multiclass", "binary")


@dataclass(frozen=True)
class TaskSpec:
    """One task of a multi-task model.

    `regression`: `out_dim` real outputs, MSE loss, float targets (N, out_dim).
    `multiclass`: `out_dim` class logits, cross-entropy, int64 targets (N,) in [0, out_dim).
    `binary`: one logit, BCE-with-logits, targets (N,) in {0, 1}.
    """

    name: str
    kind: str
    out_dim: int = 1

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise InputError("task name must be a non-empty string")
        if self.kind not in TASK_KINDS:
            raise InputError(f"task {self.name!r}: unknown kind {self.kind!r}; use one of {', '.join(TASK_KINDS)}")
        if self.kind == "binary" and self.out_dim != 1:
            raise InputError(f"task {self.name!r}: a binary task has out_dim 1, got {self.out_dim}")
        if self.kind == "multiclass" and self.out_dim < 2:
            raise InputError(f"task {self.name!r}: a multiclass task needs out_dim >= 2, got {self.out_dim}")
        if self.out_dim < 1:
            raise InputError(f"task {self.name!r}: out_dim must be >= 1, got {self.out_dim}")

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss of this task's head `output` against `target`."""
        if self.kind == "regression":
            return F.mse_loss(output, target.reshape(output.shape))
        if self.kind == "multiclass":
            return F.cross_entropy(output, target)
        return F.binary_cross_entropy_with_logits(output.squeeze(-1), target.to(output.dtype))

    def prepare_target(self, values: torch.Tensor) -> torch.Tensor:
        """Cast raw target values to this task's dtype and layout, checking their range."""
        if not torch.isfinite(values.double()).all():
            raise InputError(f"task {self.name!r}: targets contain NaN or inf; clean or drop those rows")
        if self.kind == "regression":
            return values.to(torch.float32).reshape(len(values), self.out_dim)
        labels = values.reshape(-1)
        if not torch.equal(labels, labels.round()):
            raise InputError(f"task {self.name!r}: {self.kind} targets must be whole class ids")
        labels = labels.to(torch.int64)
        top = self.out_dim if self.kind == "multiclass" else 2
        if labels.numel() and (labels.min() < 0 or labels.max() >= top):
            raise InputError(
                f"task {self.name!r}: labels must lie in [0, {top - 1}], found "
                f"[{int(labels.min())}, {int(labels.max())}]; fix the labels or the task's out_dim"
            )
        return labels

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TaskSpec":
        return cls(name=data["name"], kind=data["kind"], out_dim=int(data.get("out_dim", 1)))
