"""One optimisation step of joint training, from the task losses of a minibatch.

Plain path (aggregation "none" and a weighting that needs no gradients): back-propagate the
weighted sum, exactly as equal-weight training always did. Jacobian path: one batched
backward gives every task's gradient (and the model's coupling penalty's) on every
parameter; the shared parameters get the rows combined by `aggregate`, the task heads and
the weighting's own parameters the plain sum of the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mtl_deploy.runs.distributed import Group

from mtl_deploy.mtl.aggregate import aggregate
from mtl_deploy.mtl.jacobian import assign_gradient, shared_parameters, task_jacobian
from mtl_deploy.mtl.weighting import LossWeighting

NO_AGGREGATION = "none"


def coupling_penalty(model: nn.Module) -> torch.Tensor | None:
    """The training-only penalty a scheme adds to the loss (soft sharing), if it has one."""
    penalty = getattr(model, "regularization", None)
    return penalty() if penalty is not None else None


@dataclass
class StepResult:
    total: float  # the step's loss (weighted task terms plus any penalty) over the whole batch
    task_losses: torch.Tensor  # (T,) each task's loss over the whole batch
    per_task: torch.Tensor | None  # (T, P_shared) per-task gradients, on the Jacobian path


def optimisation_step(model: nn.Module, losses: dict[str, torch.Tensor], weighting: LossWeighting,
                      optimizer: torch.optim.Optimizer, aggregation: str = NO_AGGREGATION,
                      aggregation_options: dict | None = None, group: Group = Group(),
                      share: float = 1.0) -> StepResult:
    """Update `model` (and `weighting`) from `losses`, the task losses of this rank's
    `share` of the batch. Under torchrun the gradients (on the Jacobian path, every task's
    gradient before it is aggregated) and the losses are summed across ranks by share, so
    every rank takes the step one process would take on the whole batch."""
    terms = weighting.terms(losses)  # (T,) weighted task terms
    penalty = coupling_penalty(model)
    total = terms.sum() if penalty is None else terms.sum() + penalty
    task_losses = torch.stack([loss.detach() for loss in losses.values()])
    reduced = torch.cat([total.detach()[None], task_losses])  # (1 + T,) summed across ranks with the gradients
    if aggregation == NO_AGGREGATION and not weighting.needs_jacobian:
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        group.sync_gradients([*model.parameters(), *weighting.parameters()], share, [reduced])
        optimizer.step()
        return StepResult(float(reduced[0]), reduced[1:], None)
    shared = shared_parameters(model)
    shared_ids = {id(p) for p in shared}
    others = [p for p in [*model.parameters(), *weighting.parameters()] if id(p) not in shared_ids and p.requires_grad]
    rows = terms if penalty is None else torch.cat([terms, penalty[None]])  # (T[+1],) penalty last
    jacobian = task_jacobian(rows, shared + others)  # (T[+1], P)
    group.sum_weighted([jacobian, reduced], share)
    n_shared, n_tasks = sum(p.numel() for p in shared), len(terms)
    per_task = jacobian[:n_tasks, :n_shared]  # (T, P_shared)
    if aggregation == NO_AGGREGATION:
        direction = per_task.sum(0)
    else:
        direction = aggregate(per_task, aggregation, **(aggregation_options or {}))
    if penalty is not None:
        direction = direction + jacobian[n_tasks, :n_shared]  # the penalty is no task: never aggregated
    optimizer.zero_grad(set_to_none=True)
    assign_gradient(shared, direction)
    assign_gradient(others, jacobian[:, n_shared:].sum(0))
    weighting.observe(reduced[1:], per_task)
    optimizer.step()
    return StepResult(float(reduced[0]), reduced[1:], per_task)
