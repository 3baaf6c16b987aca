"""The few-shot model: normalisation, a trunk, and a head that is either a linear layer
(MAML, first-order MAML, Meta-SGD, ANIL, Reptile) or a metric head over stored support
examples (class prototypes for ProtoNets, support embeddings for Matching Networks).

An adapted model is the same class with adapted weights or a filled metric head, so it
saves, loads and exports like any other model. Distances and attention are written with
matmuls (‖q‖² − 2q·p + ‖p‖², normalised dot products) so the exporter lowers them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.errors import InputError, bounded
from mtl_deploy.models.multitask import Normalize
from mtl_deploy.models.trunks import MLPTrunk, build_trunk

HEADS = ("linear", "prototypes", "matching")
MATCHING_SCALE = 10.0  # cosine similarities lie in [-1, 1]; scale them before the softmax
PROTOTYPE_SCALE = 1.0  # Prototypical Networks' logits are plain negative squared distances


def squared_distances(queries: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(..., Q, F), (..., P, F) -> (..., Q, P) squared Euclidean distances, via matmul."""
    cross = queries @ points.transpose(-1, -2)
    return queries.pow(2).sum(-1, keepdim=True) - 2 * cross + points.pow(2).sum(-1).unsqueeze(-2)


def matching_log_probs(queries: torch.Tensor, support: torch.Tensor, support_onehot: torch.Tensor,
                       scale: float | torch.Tensor = MATCHING_SCALE) -> torch.Tensor:
    """Matching Networks: softmax attention on scaled cosine similarity over the support
    set, class probability = attention mass on that class's examples; returns log-probabilities."""
    q = F.normalize(queries, dim=-1)
    s = F.normalize(support, dim=-1)
    attention = torch.softmax(scale * (q @ s.transpose(-1, -2)), dim=-1)  # (..., Q, S)
    return torch.log(attention @ support_onehot + 1e-12)  # (..., Q, ways)


class FewShotModel(nn.Module):
    architecture = "fewshot"

    def __init__(self, input_shape: tuple[int, ...], task: TaskSpec, trunk: dict, head: str = "linear",
                 support_size: int = 0, learned_lr: bool = False, adaptation: dict | None = None,
                 learned_scale: bool = False):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown few-shot head {head!r}; use one of {HEADS}")
        self.input_shape, self.task, self.head_kind = tuple(input_shape), task, head
        # how this model adapts to a new task: {"algorithm", "inner_lr", "adapt_steps"}
        self.adaptation = dict(adaptation or {})
        self.normalize = Normalize(self.input_shape)
        self.trunk = build_trunk(trunk, self.input_shape)
        self.head = nn.Linear(self.trunk.out_features, task.out_dim) if head == "linear" else None
        ways, width = task.out_dim, self.trunk.out_features
        self.register_buffer("prototypes", torch.zeros(ways, width) if head == "prototypes" else None)
        self.register_buffer("support", torch.zeros(support_size, width) if head == "matching" else None)
        self.register_buffer("support_onehot", torch.zeros(support_size, ways) if head == "matching" else None)
        # Meta-SGD: one learned inner learning rate per adapted parameter element
        self.inner_lrs = nn.ParameterList([nn.Parameter(torch.zeros_like(p)) for p in self.adapted_parameters()]
                                          ) if learned_lr else None
        # a metric head's scale (inverse temperature), learned when asked (Oreshkin et al., 2018)
        fixed = MATCHING_SCALE if head == "matching" else PROTOTYPE_SCALE
        self.scale = nn.Parameter(torch.tensor(fixed)) if learned_scale and head != "linear" else None

    @property
    def metric_scale(self) -> float | torch.Tensor:
        """What a metric head multiplies its distances or similarities by."""
        if self.scale is not None:
            return self.scale
        return MATCHING_SCALE if self.head_kind == "matching" else PROTOTYPE_SCALE

    @property
    def tasks(self) -> list[TaskSpec]:
        return [self.task]

    @property
    def task_names(self) -> list[str]:
        return [self.task.name]

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.normalize.set(mean, std)

    def adapted_parameters(self) -> list[nn.Parameter]:
        """What the inner loop adapts: the whole network, the head's weight and bias last.
        An MLP in nn.Linear [W1, b1, W2, b2, ...] order (the fused kernel's); any other
        trunk in its own parameter order; only the head when the MLP has dropout."""
        if self.head is None:
            return []
        if isinstance(self.trunk, MLPTrunk):
            if self.trunk.dropout > 0:
                return [self.head.weight, self.head.bias]
            layers = [m for m in self.trunk.layers if isinstance(m, nn.Linear)] + [self.head]
            return [p for layer in layers for p in (layer.weight, layer.bias)]
        return [*self.trunk.parameters(), self.head.weight, self.head.bias]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.normalize(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.embed(x)  # (B, F)
        if self.head_kind == "linear":
            out = self.head(features)
        elif self.head_kind == "prototypes":
            out = -self.metric_scale * squared_distances(features, self.prototypes)
        else:
            out = matching_log_probs(features, self.support, self.support_onehot, self.metric_scale)
        return {self.task.name: out}

    def config(self) -> dict:
        return {"architecture": self.architecture, "input_shape": list(self.input_shape),
                "tasks": [self.task.to_dict()], "trunk": self.trunk.config(), "head": self.head_kind,
                "support_size": 0 if self.support is None else len(self.support),
                "learned_lr": self.inner_lrs is not None, "adaptation": self.adaptation,
                "learned_scale": self.scale is not None}

    @classmethod
    def from_config(cls, config: dict) -> "FewShotModel":
        return cls(tuple(config["input_shape"]), TaskSpec.from_dict(config["tasks"][0]), config["trunk"],
                   config["head"], config.get("support_size", 0), config.get("learned_lr", False),
                   config.get("adaptation"), config.get("learned_scale", False))


def check_support(model: FewShotModel, support_x: torch.Tensor, support_y: torch.Tensor) -> None:
    """Refuse a support set that does not fit the model, naming what is wrong."""
    if tuple(support_x.shape[1:]) != model.input_shape:
        raise InputError(f"support_x rows have shape {list(support_x.shape[1:])}; the model takes {list(model.input_shape)}")
    if len(support_x) == 0:
        raise InputError("the support set is empty; give at least one example per class")
    if len(support_y) != len(support_x):
        raise InputError(f"{len(support_x)} support inputs but {len(support_y)} labels")
    if not torch.isfinite(support_x).all() or not torch.isfinite(support_y.double()).all():
        raise InputError("the support set contains NaN or inf; clean it first")
    if model.task.kind == "regression":
        width = model.task.out_dim
        if support_y.numel() != len(support_y) * width:
            raise InputError(f"support_y must be (rows, {width}) regression targets for this model, "
                             f"got {list(support_y.shape)}")
    if model.task.kind == "multiclass":
        ways = model.task.out_dim
        labels = support_y.reshape(-1)
        if support_y.dim() != 1 or not torch.equal(labels, labels.round()):
            raise InputError(f"support_y must be class ids, one per support row, got shape {list(support_y.shape)}")
        if labels.min() < 0 or labels.max() >= ways:
            raise InputError(f"support labels must be class ids in [0, {ways - 1}] for this {ways}-way model, "
                             f"got values from {labels.min().item():.0f} to {labels.max().item():.0f}")
        missing = sorted(set(range(ways)) - set(labels.long().tolist()))
        if missing:
            raise InputError(f"class(es) {bounded(missing)} have no support example; "
                             f"a {ways}-way model needs every class")
