"""Loss weighting: how per-task losses become the one scalar that is back-propagated.

A weighting is an `nn.Module` so that methods with learnable weights (uncertainty
weighting) train with the model; methods that need gradients or loss history receive the
step through `forward`'s arguments.
"""

from __future__ import annotations

import torch
from torch import nn


class LossWeighting(nn.Module):
    """Interface: `forward(losses) -> scalar`, with `losses` task name -> mean loss."""

    name = "base"

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class EqualWeighting(LossWeighting):
    """Every task weighs 1: the total is the plain sum of task losses."""

    name = "equal"

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(losses.values())).sum()


WEIGHTINGS: dict[str, type[LossWeighting]] = {EqualWeighting.name: EqualWeighting}


def make_weighting(name: str) -> LossWeighting:
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {name!r}; use one of {', '.join(WEIGHTINGS)}")
    return WEIGHTINGS[name]()
