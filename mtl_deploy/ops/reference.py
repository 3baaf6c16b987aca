"""Pure-PyTorch twins of the fused kernels: the semantic source of truth.

Same signatures as :func:`mtl_deploy.ops.inner_loop`, :func:`mtl_deploy.ops.maml_step`
and :func:`mtl_deploy.ops.multihead_linear`. They are the fallback when the C++
extension is not built, the oracle the kernels are tested against, and what export
code traces (so no artifact ever contains a custom op).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import check_inner_loop, check_maml_step, check_multihead_linear


def mlp_forward(thetas: Sequence[Tensor], x: Tensor, activation: str) -> Tensor:
    """Per-task MLP: thetas are [W1, b1, ...] stacked per task, (T, out, in) / (T, out)."""
    act = torch.relu if activation == "relu" else torch.tanh
    h = x  # (T, K, in)
    layers = len(thetas) // 2
    for i in range(layers):
        w, b = thetas[2 * i], thetas[2 * i + 1]
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))  # (T, K, out)
        if i < layers - 1:
            h = act(h)
    return h


def task_losses(thetas: Sequence[Tensor], x: Tensor, y: Tensor, loss: str, activation: str) -> Tensor:
    """(T,) each task's mean loss over its K examples."""
    out = mlp_forward(thetas, x, activation)  # (T, K, out)
    if loss == "mse":
        return ((out - y) ** 2).mean(dim=(1, 2))
    t, k, c = out.shape
    return F.cross_entropy(out.reshape(t * k, c), y.reshape(t * k), reduction="none").view(t, k).mean(1)


def inner_loop_reference(
    params: Sequence[Tensor],
    x: Tensor,
    y: Tensor,
    *,
    steps: int,
    lr: float | Sequence[Tensor],
    loss: str = "mse",
    activation: str = "relu",
    order: int = 2,
) -> list[Tensor]:
    """``steps`` SGD steps per task on the tasks' summed losses, autograd throughout.

    Tasks are independent, so the gradient of the summed loss with respect to the
    stacked per-task parameters is each task's own gradient. ``order=2`` keeps the
    graph of every step (exact MAML); ``order=1`` takes each step's gradient as a
    constant, which makes every step's Jacobian the identity (first-order MAML).
    """
    check_inner_loop(params, x, y, steps, lr, loss, activation, order)
    t = x.shape[0]
    thetas = [p.unsqueeze(0).expand(t, *p.shape).contiguous() for p in params]  # (T, *p)
    create_graph = order == 2 and torch.is_grad_enabled()
    for _ in range(steps):
        inputs = [th if create_graph and th.requires_grad else th.detach().requires_grad_() for th in thetas]
        with torch.enable_grad():
            total = task_losses(inputs, x, y, loss, activation).sum()
            grads = torch.autograd.grad(total, inputs, create_graph=create_graph)
        if isinstance(lr, (int, float)):
            thetas = [th - lr * g for th, g in zip(thetas, grads)]
        else:
            thetas = [th - a * g for th, a, g in zip(thetas, lr, grads)]
    return thetas


def maml_step_reference(
    params: Sequence[Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    steps: int,
    lr: float | Sequence[Tensor],
    loss: str = "mse",
    activation: str = "relu",
    order: int = 2,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """The MAML meta-step by autograd through :func:`inner_loop_reference`.

    Returns the mean query loss over tasks, its gradient with respect to each
    parameter, and with respect to each Meta-SGD rate (empty for a float ``lr``).
    """
    check_maml_step(params, support_x, support_y, query_x, query_y, steps, lr, loss, activation, order)
    leaves = [p.detach().requires_grad_() for p in params]
    rates = lr if isinstance(lr, (int, float)) else [a.detach().requires_grad_() for a in lr]
    with torch.enable_grad():
        adapted = inner_loop_reference(leaves, support_x, support_y, steps=steps, lr=rates, loss=loss,
                                       activation=activation, order=order)
        meta_loss = task_losses(adapted, query_x, query_y, loss, activation).mean()
        wrt = leaves + ([] if isinstance(rates, (int, float)) else rates)
        grads = torch.autograd.grad(meta_loss, wrt, allow_unused=True)
    grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt)]
    return meta_loss.detach(), grads[: len(leaves)], grads[len(leaves) :]


def multihead_linear_reference(x: Tensor, weight: Tensor, bias: Tensor, head_ids: Tensor | None = None) -> Tensor:
    """Every head as its own Linear (B, H, C), or row i through head ``head_ids[i]`` (B, C).

    Per-head products are what export traces: the graph holds one standard Gemm per
    head, as a model of separate ``nn.Linear`` heads would.
    """
    # An exported graph cannot read head_ids' values; the runtime checks its inputs.
    check_multihead_linear(x, weight, bias, head_ids, check_values=not torch.compiler.is_exporting())
    if head_ids is None:
        return torch.stack([F.linear(x, w, b) for w, b in zip(weight.unbind(0), bias.unbind(0))], dim=1)  # (B, H, C)
    w = weight[head_ids]  # (B, C, D)
    return torch.bmm(w, x.unsqueeze(-1)).squeeze(-1) + bias[head_ids]  # (B, C)
