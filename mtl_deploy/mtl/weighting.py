"""Loss weighting: how per-task losses become the one scalar that is back-propagated.

A weighting is an `nn.Module` so that methods with learnable weights (uncertainty,
GradNorm) train with the model. `terms(losses)` gives each task's weighted term (T,); the
scalar is their sum. Methods that need more than the current losses get it through hooks
the training loop calls: `observe` (after the per-task gradients of a step, GradNorm) and
`epoch_end` (mean task losses of the epoch, DWA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtl_deploy.errors import InputError


class LossWeighting(nn.Module):
    """Interface: `terms(losses) -> (T,)` with `losses` task name -> mean loss;
    `forward` sums the terms."""

    name = "base"
    needs_jacobian = False  # True: `observe` wants the per-task gradients of every step

    def __init__(self, tasks: list[str] | None = None):
        super().__init__()
        self.tasks = list(tasks or [])

    def terms(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.terms(losses).sum()

    def observe(self, losses: torch.Tensor, jacobian: torch.Tensor) -> None:
        """`losses` (T,) detached, `jacobian` (T, P) gradients of `terms` on shared parameters."""

    def epoch_end(self, mean_losses: torch.Tensor) -> None:
        """`mean_losses` (T,): each task's mean training loss over the epoch just ended."""


class EqualWeighting(LossWeighting):
    """Every task weighs 1: the total is the plain sum of task losses."""

    name = "equal"

    def terms(self, losses):
        return torch.stack(list(losses.values()))


class StaticWeighting(LossWeighting):
    """Fixed weights from the config: `{"weights": {"task": w, ...}}` (every task named)."""

    name = "static"

    def __init__(self, tasks, weights: dict[str, float] | None = None):
        super().__init__(tasks)
        weights = weights or {}
        missing = [t for t in self.tasks if t not in weights]
        if missing or set(weights) - set(self.tasks):
            raise InputError(f"static weighting needs train.weighting_options.weights with exactly the tasks "
                             f"{self.tasks}; got {sorted(weights)}")
        self.register_buffer("weights", torch.tensor([float(weights[t]) for t in self.tasks]))

    def terms(self, losses):
        return self.weights * torch.stack(list(losses.values()))  # (T,)


class UncertaintyWeighting(LossWeighting):
    """Kendall, Gal & Cipolla (2018): a learned log-variance s_t per task, term
    L_t / (2 e^{s_t}) + s_t / 2 (LibMTL's form for every task kind)."""

    name = "uncertainty"

    def __init__(self, tasks):
        super().__init__(tasks)
        self.log_variance = nn.Parameter(torch.zeros(len(self.tasks)))

    def terms(self, losses):
        stacked = torch.stack(list(losses.values()))  # (T,)
        return stacked / (2 * self.log_variance.exp()) + self.log_variance / 2


class GradNormWeighting(LossWeighting):
    """GradNorm (Chen et al. 2018): weights T·softmax(θ) learned so that each task's
    weighted gradient norm on the shared parameters tracks the mean norm times its relative
    inverse training rate (L_t / L_t(0) over its mean) to the power `alpha`. θ learns only
    from the GradNorm loss, which `observe` writes into θ.grad."""

    name = "gradnorm"
    needs_jacobian = True

    def __init__(self, tasks, alpha: float = 1.5):
        super().__init__(tasks)
        self.alpha = alpha
        self.logits = nn.Parameter(torch.zeros(len(self.tasks)))
        self.register_buffer("initial_losses", torch.zeros(0))

    def weights(self) -> torch.Tensor:
        return len(self.tasks) * F.softmax(self.logits, dim=0)  # (T,) summing to T

    def terms(self, losses):
        return self.weights() * torch.stack(list(losses.values()))

    def observe(self, losses, jacobian):
        if self.initial_losses.numel() == 0:
            self.initial_losses = losses.clone()
        weights = self.weights()
        raw_norms = jacobian.norm(dim=1) / weights.detach()  # (T,) ||∇ L_t|| without its weight
        norms = weights * raw_norms  # (T,) differentiable in θ
        rate = losses / self.initial_losses.clamp_min(1e-12)
        target = (norms.mean() * (rate / rate.mean()) ** self.alpha).detach()
        self.logits.grad = torch.autograd.grad((norms - target).abs().sum(), self.logits)[0]


class DWAWeighting(LossWeighting):
    """Dynamic Weight Average (Liu et al. 2019): weights T·softmax(r / temperature) with
    r_t the ratio of task t's mean loss over the last two epochs; 1 each for two epochs."""

    name = "dwa"

    def __init__(self, tasks, temperature: float = 2.0):
        super().__init__(tasks)
        self.temperature = temperature
        self.register_buffer("history", torch.zeros(0, len(self.tasks)))  # (epochs, T) mean losses
        self.register_buffer("weights", torch.ones(len(self.tasks)))

    def terms(self, losses):
        return self.weights * torch.stack(list(losses.values()))

    def epoch_end(self, mean_losses):
        self.history = torch.cat([self.history, mean_losses[None]])[-2:]
        if len(self.history) == 2:
            ratio = self.history[1] / self.history[0].clamp_min(1e-12)  # (T,)
            self.weights = len(self.tasks) * F.softmax(ratio / self.temperature, dim=0)


class RandomWeighting(LossWeighting):
    """Random loss weighting (Lin et al. 2022): fresh weights T·softmax(N(0, 1)) every
    step (scaled by T so the total matches equal weighting on average), drawn from a
    generator of its own seeded by `seed`, so the model's random stream is untouched."""

    name = "random"

    def __init__(self, tasks, seed: int = 0):
        super().__init__(tasks)
        self.generator = torch.Generator().manual_seed(seed)

    def get_extra_state(self) -> torch.Tensor:  # saved with the training state, for exact resumes
        return self.generator.get_state()

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    def terms(self, losses):
        weights = len(self.tasks) * F.softmax(torch.randn(len(self.tasks), generator=self.generator), dim=0)
        stacked = torch.stack(list(losses.values()))  # (T,) on the model's device; the generator is the CPU's
        return weights.to(stacked.device) * stacked


WEIGHTINGS: dict[str, type[LossWeighting]] = {cls.name: cls for cls in (
    EqualWeighting, StaticWeighting, UncertaintyWeighting, GradNormWeighting, DWAWeighting, RandomWeighting)}


def make_weighting(name: str, tasks: list[str] | None = None, options: dict | None = None) -> LossWeighting:
    """The weighting `name` for `tasks`, with its `options` (train.weighting_options)."""
    if name not in WEIGHTINGS:
        raise InputError(f"unknown loss weighting {name!r}; use one of {', '.join(WEIGHTINGS)}")
    try:
        return WEIGHTINGS[name](tasks, **(options or {}))
    except TypeError as err:
        raise InputError(f"loss weighting {name!r}: bad train.weighting_options ({err})") from None
