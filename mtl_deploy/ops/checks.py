"""Argument checks at the Python edge of the kernels, shared by both backends.

Every failure is a ``ValueError`` naming the argument, the expected shape and what
was passed, so the fused kernel and its reference reject the same inputs the same
way. (The C++ code re-checks what it relies on, for direct ``torch.ops`` calls.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

LOSSES = ("mse", "cross_entropy")
ACTIVATIONS = ("relu", "tanh")


def _tensor(name: str, t: object, dtype: torch.dtype | None = None) -> Tensor:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name} must have dtype {dtype}, got {t.dtype}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous; call .contiguous() on it")
    return t


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_inner_loop_options(
    params: Sequence[Tensor], steps: int, lr: float | Sequence[Tensor], loss: str, activation: str, order: int
) -> None:
    """Raises ValueError unless the non-tensor arguments of an inner loop are valid.

    This is all the fused path checks in Python: the C++ kernel checks every tensor
    itself (RuntimeError naming it), and Python-side tensor checks would cost more
    than a small adaptation.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (first-order) or 2 (exact), got {order!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if (not isinstance(params, (list, tuple)) or len(params) < 2 or len(params) % 2
            or not all(isinstance(p, Tensor) for p in params)):
        raise ValueError("params must be a list of tensors [W1, b1, W2, b2, ...] in nn.Linear layout")
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) or (
            isinstance(lr, (list, tuple)) and all(isinstance(a, Tensor) for a in lr))):
        raise ValueError(f"lr must be a float or a list of {len(params)} tensors shaped like params (Meta-SGD)")


def check_inner_loop(
    params: Sequence[Tensor],
    x: Tensor,
    y: Tensor,
    steps: int,
    lr: float | Sequence[Tensor],
    loss: str,
    activation: str,
    order: int,
) -> None:
    """Raises ValueError unless the arguments describe a valid batched inner loop."""
    check_inner_loop_options(params, steps, lr, loss, activation, order)
    x = _tensor("x", x)
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"x must be float32 or float64, got {x.dtype}")
    if x.dim() != 3 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must be (T, K, in) with T, K >= 1, got {_shape(x)}")
    t, k, width = x.shape
    for i in range(0, len(params), 2):
        w = _tensor(f"params[{i}]", params[i], x.dtype)
        b = _tensor(f"params[{i + 1}]", params[i + 1], x.dtype)
        if w.dim() != 2 or w.shape[1] != width:
            raise ValueError(f"params[{i}] must be (out, {width}) (nn.Linear layout), got {_shape(w)}")
        if _shape(b) != (w.shape[0],):
            raise ValueError(f"params[{i + 1}] must be ({w.shape[0]},), got {_shape(b)}")
        if w.device != x.device or b.device != x.device:
            raise ValueError(f"params[{i}] and params[{i + 1}] must be on {x.device}")
        width = w.shape[0]
    if loss == "mse":
        y = _tensor("y", y, x.dtype)
        if _shape(y) != (t, k, width):
            raise ValueError(f"y must be (T, K, out) = {(t, k, width)} for mse, got {_shape(y)}")
    else:
        y = _tensor("y", y, torch.int64)
        if _shape(y) != (t, k):
            raise ValueError(f"y must be (T, K) = {(t, k)} class ids for cross_entropy, got {_shape(y)}")
        _check_range("y", y, width)
    if isinstance(lr, (int, float)) and not isinstance(lr, bool):
        return
    if not isinstance(lr, (list, tuple)) or len(lr) != len(params):
        raise ValueError(f"lr must be a float or a list of {len(params)} tensors shaped like params (Meta-SGD)")
    for i, (a, p) in enumerate(zip(lr, params)):
        a = _tensor(f"lr[{i}]", a, x.dtype)
        if a.shape != p.shape:
            raise ValueError(f"lr[{i}] must be shaped like params[{i}] {_shape(p)}, got {_shape(a)}")


def check_maml_step(
    params: Sequence[Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    steps: int,
    lr: float | Sequence[Tensor],
    loss: str,
    activation: str,
    order: int,
) -> None:
    """Raises ValueError unless support and query sets describe the same T tasks."""
    check_inner_loop(params, support_x, support_y, steps, lr, loss, activation, order)
    try:
        check_inner_loop(params, query_x, query_y, steps, lr, loss, activation, order)
    except ValueError as err:
        raise ValueError(f"query set: {err}") from None
    if query_x.shape[0] != support_x.shape[0]:
        raise ValueError(f"query_x must hold the same {support_x.shape[0]} tasks as support_x, "
                         f"got {tuple(query_x.shape)}")


def _check_range(name: str, ids: Tensor, n: int) -> None:
    if ids.numel():
        lo, hi = (int(v) for v in torch.aminmax(ids))
        if lo < 0 or hi >= n:
            raise ValueError(f"{name} must hold ids in [0, {n}), got values in [{lo}, {hi}]")


def check_multihead_linear(
    x: Tensor, weight: Tensor, bias: Tensor, head_ids: Tensor | None, check_values: bool = True
) -> None:
    """Raises ValueError unless x (B, D), weight (H, C, D), bias (H, C), head_ids (B,) fit."""
    x = _tensor("x", x)
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"x must be float32 or float64, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"x must be (B, D), got {_shape(x)}")
    weight = _tensor("weight", weight, x.dtype)
    if weight.dim() != 3 or weight.shape[2] != x.shape[1]:
        raise ValueError(f"weight must be (H, C, {x.shape[1]}), got {_shape(weight)}")
    bias = _tensor("bias", bias, x.dtype)
    if _shape(bias) != _shape(weight)[:2]:
        raise ValueError(f"bias must be (H, C) = {_shape(weight)[:2]}, got {_shape(bias)}")
    if head_ids is None:
        return
    head_ids = _tensor("head_ids", head_ids, torch.int64)
    if _shape(head_ids) != (x.shape[0],):
        raise ValueError(f"head_ids must be (B,) = ({x.shape[0]},), got {_shape(head_ids)}")
    if check_values:
        _check_range("head_ids", head_ids, weight.shape[0])
