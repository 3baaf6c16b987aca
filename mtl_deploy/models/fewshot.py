"""The few-shot model: normalisation, a trunk, and a head that is either a linear layer
(MAML, first-order MAML, Meta-SGD, ANIL, Reptile) or a metric head over stored support
examples (class prototypes for ProtoNets, support embeddings for Matching Networks).

An adapted model is the same class with adapted weights or a filled metric head, so it
saves, loads and exports like any other model. Distances and attention are written with
matmuls (‖q‖² − 2q·p + ‖p‖², normalised dot products) so the exporter lowers them.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.errors import InputError, bounded
from mtl_deploy.models.multitask import Normalize
from mtl_deploy.models.trunks import MLPTrunk, build_trunk

HEADS = ("linear", "prototypes", "matching")
SUPPORT_BUFFERS = ("prototypes", "support", "support_onehot")  # what a metric head holds of a support set
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

    def __init__(self, input_shape: tuple[int, ...], task: TaskSpec, trunk: dict | nn.Module, head: str = "linear",
                 support_size: int = 0, learned_lr: bool = False, adaptation: dict | None = None,
                 learned_scale: bool = False):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown few-shot head {head!r}; use one of {HEADS}")
        self.input_shape, self.task, self.head_kind = tuple(input_shape), task, head
        # how this model adapts to a new task: {"algorithm", "inner_lr", "adapt_steps"}
        self.adaptation = dict(adaptation or {})
        self.normalize = Normalize(self.input_shape)
        self.trunk = trunk if isinstance(trunk, nn.Module) else build_trunk(trunk, self.input_shape)
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

    def reheaded(self, task: TaskSpec | None = None, head: str | None = None, support_size: int = 0) -> "FewShotModel":
        """A copy with another task or head (a metric head sized for a support set), the
        network and every other weight kept; the support buffers start empty. The trunk
        is copied as a module, so a user's network needs no factory for it."""
        twin = FewShotModel(self.input_shape, task or self.task, copy.deepcopy(self.trunk), head or self.head_kind,
                            support_size, self.inner_lrs is not None, self.adaptation, self.scale is not None)
        kept = {k: v for k, v in self.state_dict().items() if k not in SUPPORT_BUFFERS}
        if twin.head is not None and self.head is not None and twin.head.weight.shape != self.head.weight.shape:
            kept = {k: v for k, v in kept.items() if not k.startswith("head.")}
        twin.load_state_dict(kept, strict=False)
        return twin

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


FEWSHOT_HEADS = {"prototypes": "protonet", "matching": "matching", "finetune": "anil"}


def fewshot(backbone: nn.Module, head: str = "prototypes", *, example_inputs: torch.Tensor, ways: int = 5,
            steps: int = 50, lr: float = 0.1, pooling: str = "auto", factory: str | None = None,
            kwargs: dict | None = None, task: str = "class") -> FewShotModel:
    """A few-shot classifier around any frozen backbone, with no meta-training: class
    prototypes, Matching Networks attention over the support embeddings, or `finetune`, a
    logistic head trained from zero on the frozen embeddings for `steps` SGD steps at `lr`
    (ANIL's inner loop, on the fused kernel). `example_inputs` (one float tensor, at least
    2 rows) fixes the input shape. It adapts with `mtl_deploy.adapt`, exports as an
    adapter graph, and can be meta-fine-tuned by the learners like any few-shot model.
    `factory`/`kwargs` say how the backbone is rebuilt, which `save` needs."""
    from mtl_deploy.models.inputs import example_signature
    from mtl_deploy.models.module_trunk import ModuleTrunk
    from mtl_deploy.trust import parse_factory

    if head not in FEWSHOT_HEADS:
        raise InputError(f"unknown few-shot head {head!r}; use one of {', '.join(FEWSHOT_HEADS)}")
    signature = example_signature(example_inputs)
    if signature.layout != "tensor" or signature.specs[0].integer or any(isinstance(d, str) for d in signature.specs[0].shape[1:]):
        raise InputError("a few-shot backbone takes one float tensor of fixed row shape (support sets are arrays)")
    if factory is not None:
        parse_factory(factory)
    source = None if factory is None else {"type": "module", "factory": factory, "kwargs": dict(kwargs or {})}
    trunk = ModuleTrunk(backbone, signature, pooling, source, freeze=True, example=example_inputs)
    adaptation = {"algorithm": FEWSHOT_HEADS[head], "inner_lr": float(lr), "adapt_steps": int(steps)}
    model = FewShotModel(tuple(example_inputs.shape[1:]), TaskSpec(task, "multiclass", ways), trunk,
                         "linear" if head == "finetune" else head, adaptation=adaptation)
    if model.head is not None:
        nn.init.zeros_(model.head.weight)  # logistic regression from zero: every class equally likely
        nn.init.zeros_(model.head.bias)
    return model.eval()
