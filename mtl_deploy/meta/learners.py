"""The thin classes over the functional cores: each learner holds its hyper-parameters,
computes one outer step's gradients (`outer_step`) and adapts a model to one task
(`adapt`). `make_learner` maps a config's algorithm name to its learner."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mtl_deploy.config import MetaConfig
from mtl_deploy.data.episodes import Episodes
from mtl_deploy.errors import InputError
from mtl_deploy.meta.gradient_based import (adapt_params, fused_meta_step, maml_loss, reptile_direction,
                                            with_adapted_weights)
from mtl_deploy.meta.metric import metric_loss, with_support
from mtl_deploy.models.fewshot import FewShotModel, check_support

GRADIENT_BASED = {"maml": {"order": 2}, "fomaml": {"order": 1}, "metasgd": {"order": 2, "learned_lr": True},
                  "anil": {"order": 2, "head_only": True}, "reptile": {"order": 1}}
METRIC = ("protonet", "matching")
ALGORITHMS = (*GRADIENT_BASED, *METRIC)


@dataclass
class GradientLearner:
    """MAML (order 2), first-order MAML (order 1), Meta-SGD (learned rates), ANIL (head
    only) and Reptile (its own outer direction) share the inner loop."""

    name: str
    steps: int
    lr: float
    adapt_steps: int
    order: int = 2
    head_only: bool = False
    learned_lr: bool = False
    head_lr: float | None = None  # the head's inner learning rate, when not `lr`
    proto_init: bool = False  # each task's head starts from its class prototypes (Proto-MAML)

    head = "linear"

    def outer_step(self, model: FewShotModel, episodes: Episodes) -> float:
        """Fill the gradients of `model` for one meta-batch; return its query loss."""
        if self.name == "reptile":
            for param, direction in zip(model.adapted_parameters(), reptile_direction(
                    model, episodes, steps=self.steps, lr=self.lr)):
                param.grad = direction
            with torch.no_grad():
                return float(self.query_loss(model, episodes))
        if not self.head_only:
            fused = fused_meta_step(model, episodes, steps=self.steps, lr=self.lr, order=self.order)
            if fused is not None:
                return fused
        loss = self.query_loss(model, episodes)
        loss.backward()
        return float(loss.detach())

    def query_loss(self, model: FewShotModel, episodes: Episodes, steps: int | None = None) -> torch.Tensor:
        order = self.order if torch.is_grad_enabled() else 1
        return maml_loss(model, episodes, steps=self.steps if steps is None else steps, lr=self.lr, order=order,
                         head_only=self.head_only, head_lr=self.head_lr, proto_init=self.proto_init)

    def adapt(self, model: FewShotModel, support_x, support_y, steps: int | None = None,
              lr: float | None = None) -> FewShotModel:
        check_support(model, support_x, support_y)
        steps = self.adapt_steps if steps is None else steps
        if steps < 0:
            raise InputError(f"steps must be >= 0, got {steps}")
        if model.task.kind == "regression":
            y = support_y.float().reshape(1, len(support_y), -1)  # (1, K, out)
        else:
            y = support_y.long().reshape(1, -1)  # (1, K)
        with torch.no_grad():
            params = adapt_params(model.eval(), support_x[None].float(), y, steps=steps,
                                  lr=self.lr if lr is None else lr, order=1, head_only=self.head_only,
                                  head_lr=self.head_lr if lr is None else None, proto_init=self.proto_init)
        return with_adapted_weights(model, params, self.head_only)


@dataclass
class MetricLearner:
    """Prototypical and Matching Networks: trained on episodes, adapted by embedding the
    support set."""

    name: str

    @property
    def head(self) -> str:
        return "prototypes" if self.name == "protonet" else "matching"

    def outer_step(self, model: FewShotModel, episodes: Episodes) -> float:
        loss = self.query_loss(model, episodes)
        loss.backward()
        return float(loss.detach())

    def query_loss(self, model: FewShotModel, episodes: Episodes, steps: int | None = None) -> torch.Tensor:
        return metric_loss(model, self.name, episodes)

    def adapt(self, model: FewShotModel, support_x, support_y, steps: int | None = None,
              lr: float | None = None) -> FewShotModel:
        check_support(model, support_x, support_y)
        return with_support(model, self.name, support_x.float(), support_y.long())


def make_learner(meta: MetaConfig) -> GradientLearner | MetricLearner:
    if meta.algorithm in METRIC:
        if meta.head_lr is not None or meta.proto_init:
            raise InputError(f"meta.head_lr and meta.proto_init apply to gradient-based learners, not {meta.algorithm}")
        return MetricLearner(meta.algorithm)
    if meta.algorithm not in GRADIENT_BASED:
        raise InputError(f"unknown algorithm {meta.algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    if meta.inner_steps < 1 or meta.adapt_steps < 0 or meta.inner_lr <= 0:
        raise InputError("meta.inner_steps must be >= 1, meta.adapt_steps >= 0 and meta.inner_lr > 0")
    if meta.algorithm in ("reptile", "metasgd") and (meta.head_lr is not None or meta.proto_init):
        raise InputError(f"meta.head_lr and meta.proto_init apply to maml, fomaml and anil, not {meta.algorithm}")
    if meta.head_lr is not None and meta.head_lr <= 0:
        raise InputError(f"meta.head_lr must be > 0, got {meta.head_lr}")
    return GradientLearner(meta.algorithm, meta.inner_steps, meta.inner_lr, meta.adapt_steps,
                           head_lr=meta.head_lr, proto_init=meta.proto_init, **GRADIENT_BASED[meta.algorithm])
