"""The public kernels: check arguments once, then run the C++ op or the reference.

Which implementation runs is :func:`mtl_deploy.ops.backend` and, per device,
:func:`~mtl_deploy.ops.loader.runs_fused`; all give the same values and gradients
(the test suite holds them to it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import ACTIVATIONS, LOSSES, check_inner_loop_options, check_multihead_linear
from .loader import runs_fused
from .reference import inner_loop_reference, maml_step_reference, multihead_linear_reference
from .registration import AUX_GRAD_SUMS, AUX_NONE, AUX_TRAJECTORY


def inner_loop(
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
    """Adapts an MLP to T tasks at once with ``steps`` SGD steps each.

    params: [W1, b1, W2, b2, ...] in nn.Linear layout, shared by all tasks.
    x: (T, K, in); y: (T, K, out) floats for "mse" or (T, K) int64 for "cross_entropy".
    lr: a float, or one tensor per parameter shaped like it (Meta-SGD, learnable).
    Returns the adapted parameters stacked per task, each (T, *p.shape),
    differentiable in ``params`` and tensor ``lr``: exactly (``order=2``) or with
    each step's Jacobian taken as the identity (``order=1``, first-order MAML).
    """
    if not runs_fused(x) or (torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)):
        # Only the reference differentiates through the data (e.g. a trunk
        # producing x); the kernel's gradient covers params and lr.
        return inner_loop_reference(params, x, y, steps=steps, lr=lr, loss=loss, activation=activation, order=order)
    check_inner_loop_options(params, steps, lr, loss, activation, order)
    lr_list = [] if isinstance(lr, (int, float)) else list(lr)
    lr_scalar = float(lr) if isinstance(lr, (int, float)) else 0.0
    args = (list(params), x, y, lr_list, lr_scalar, steps, LOSSES.index(loss), ACTIVATIONS.index(activation))
    wants_grad = _wants_grad(*params, *lr_list)
    if not wants_grad and not torch.compiler.is_compiling():
        with _below_autograd():  # nothing to differentiate: skip the autograd wrapper
            adapted, _ = torch.ops.mtl_deploy.inner_loop(*args, AUX_NONE)
        return list(adapted)
    aux_mode = AUX_NONE
    if wants_grad and order == 2:
        aux_mode = AUX_TRAJECTORY
    elif wants_grad and any(a.requires_grad for a in lr_list):
        aux_mode = AUX_GRAD_SUMS
    adapted, _ = torch.ops.mtl_deploy.inner_loop(*args, aux_mode)
    return list(adapted)


def maml_step(
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
    """One MAML meta-step in one call: adapt on the support sets, then the mean query
    loss over tasks and its gradient.

    Arguments as :func:`inner_loop` (support_x, support_y are its x, y; query_x,
    query_y the same T tasks' query sets). Returns ``(loss, grad_params, grad_lr)``:
    the loss (a 0-d tensor), d loss / d params (one tensor per parameter) and
    d loss / d lr (one per Meta-SGD rate, empty for a float lr), exactly
    (``order=2``) or first-order (``order=1``). The result is not differentiable.
    """
    if not runs_fused(support_x):
        return maml_step_reference(params, support_x, support_y, query_x, query_y, steps=steps, lr=lr, loss=loss,
                                   activation=activation, order=order)
    check_inner_loop_options(params, steps, lr, loss, activation, order)
    lr_list = [] if isinstance(lr, (int, float)) else list(lr)
    lr_scalar = float(lr) if isinstance(lr, (int, float)) else 0.0
    with _below_autograd():  # returns gradients; nothing to record
        meta_loss, grads, grad_lr = torch.ops.mtl_deploy.maml_step(
            [p.detach() for p in params], support_x, support_y, query_x, query_y, [a.detach() for a in lr_list],
            lr_scalar, steps, LOSSES.index(loss), ACTIVATIONS.index(activation), order)
    return meta_loss, list(grads), list(grad_lr)


def multihead_linear(x: Tensor, weight: Tensor, bias: Tensor, head_ids: Tensor | None = None) -> Tensor:
    """x (B, D) through heads weight (H, C, D), bias (H, C).

    Returns every head's output (B, H, C), or with ``head_ids`` (B,) int64 each
    row through its own head (B, C). Differentiable in x, weight and bias. Under
    ``torch.export``, ONNX export or ``torch.jit.trace`` it records the reference,
    so an artifact holds standard operators only.
    """
    if _exporting() or _tracing():
        return multihead_linear_reference(x, weight, bias, head_ids)
    if head_ids is None:
        return _all_heads(x, weight, bias)
    if not runs_fused(x):
        return multihead_linear_reference(x, weight, bias, head_ids)
    # The kernel checks every argument itself (RuntimeError naming it).
    if _wants_grad(x, weight, bias) or torch.compiler.is_compiling():
        return torch.ops.mtl_deploy.multihead_linear(x, weight, bias, head_ids)
    with _below_autograd():
        return torch.ops.mtl_deploy.multihead_linear(x, weight, bias, head_ids)


def _wants_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


# A custom op's autograd wrapper costs several microseconds per call. With no gradient
# wanted the call can go below it, except under torch.compile, which traces the op as
# registered.
_below_autograd = torch._C._AutoDispatchBelowAutograd


_exporting, _tracing = torch.compiler.is_exporting, torch.jit.is_tracing  # bound once: called per forward


def _all_heads(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Every head at once is one GEMM against the heads stacked as one Linear (views,
    no copy), on both backends: the BLAS is the fused kernel here, and a custom-op
    dispatch would cost more than the whole product at small B. Arguments are
    diagnosed in full only when the product rejects them."""
    shape = weight.shape
    if not (x.is_contiguous() and bias.shape == shape[:2]):
        check_multihead_linear(x, weight, bias, None)  # raises ValueError naming the argument
    try:
        h, c, d = shape
        return F.linear(x, weight.view(h * c, d), bias.view(h * c)).view(x.shape[0], h, c)  # (B, H, C)
    except (RuntimeError, ValueError):
        check_multihead_linear(x, weight, bias, None)
        raise
