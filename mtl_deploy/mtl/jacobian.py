"""Per-task gradients in one batched backward pass.

`task_jacobian` differentiates T scalar losses with respect to a list of parameters at once:
autograd's batched backward (`is_grads_batched=True`, i.e. `torch.func.vmap` over the
vector-Jacobian product) pushes the T one-hot cotangents through the graph together,
instead of T separate backward passes over the whole model.
"""

from __future__ import annotations

import torch
from torch import nn

HEADS_PREFIX = "heads."  # every multi-task model keeps its task heads under `heads`


def shared_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters outside the task heads: the ones every scheme's tasks compete for."""
    return [p for name, p in model.named_parameters() if not name.startswith(HEADS_PREFIX) and p.requires_grad]


def task_jacobian(losses: torch.Tensor, params: list[torch.Tensor], retain_graph: bool = False) -> torch.Tensor:
    """(T, P) matrix whose row t is ∇ losses[t] with respect to `params`, flattened.

    `losses` (T,) must come from one forward pass; a parameter a loss does not reach gets
    zeros in its row.
    """
    cotangents = torch.eye(len(losses), dtype=losses.dtype, device=losses.device)  # (T, T) one row per task
    grads = torch.autograd.grad(losses, params, cotangents, retain_graph=retain_graph, allow_unused=True,
                                is_grads_batched=True)
    rows = [p.new_zeros(len(losses), p.numel()) if g is None else g.reshape(len(losses), -1)
            for g, p in zip(grads, params)]
    return torch.cat(rows, dim=1)  # (T, P)


def assign_gradient(params: list[torch.Tensor], flat: torch.Tensor) -> None:
    """Write the flat vector `flat` (P,) into `params`' `.grad`, in order."""
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].reshape(p.shape).clone()
        offset += p.numel()
