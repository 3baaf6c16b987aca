"""Python half of the operator registrations: fake kernels and autograd.

The schemas and CPU kernels are registered by the C++ library
(``csrc/registration.cpp``); :func:`register` runs once, right after it loads, so
``torch.library.opcheck``, ``torch.compile`` and ``torch.export`` see shapes and
gradients of every ``mtl_deploy`` op.
"""

from __future__ import annotations

import torch
from torch import Tensor

OPS = torch.ops.mtl_deploy

# aux_mode of mtl_deploy::inner_loop: what the forward saves for the backward.
AUX_NONE, AUX_GRAD_SUMS, AUX_TRAJECTORY = 0, 1, 2


def _numel(params: list[Tensor]) -> int:
    return sum(p.numel() for p in params)


def _inner_loop_fake(params, x, y, lr, lr_scalar, steps, loss, activation, aux_mode):
    t = x.shape[0]
    adapted = [p.new_empty((t, *p.shape)) for p in params]  # (T, *p)
    aux_shape = {AUX_NONE: (0,), AUX_GRAD_SUMS: (t, _numel(params)), AUX_TRAJECTORY: (t, steps, _numel(params))}
    return adapted, x.new_empty(aux_shape[aux_mode])


def _inner_loop_backward_fake(params, x, y, lr, lr_scalar, steps, loss, activation, trajectory, grad_adapted):
    return [torch.empty_like(p) for p in params], [torch.empty_like(a) for a in lr]


def _inner_loop_setup(ctx, inputs, output):
    params, x, y, lr, lr_scalar, steps, loss, activation, aux_mode = inputs
    ctx.n_params, ctx.n_lr = len(params), len(lr)
    ctx.hyper = (lr_scalar, steps, loss, activation)
    ctx.aux_mode = aux_mode
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(*params, *lr, x, y, output[1])


def _inner_loop_backward(ctx, grads, _grad_aux):
    if torch.is_grad_enabled():
        raise RuntimeError(
            "mtl_deploy.ops.inner_loop: double backward is not supported; "
            "use mtl_deploy.ops.inner_loop_reference for higher derivatives"
        )
    saved = ctx.saved_tensors
    params = list(saved[: ctx.n_params])
    lr = list(saved[ctx.n_params : ctx.n_params + ctx.n_lr])
    x, y, aux = saved[ctx.n_params + ctx.n_lr :]
    t = x.shape[0]
    # (T, *p) per adapted parameter; unused outputs get no gradient from autograd.
    v = [p.new_zeros((t, *p.shape)) if g is None else g.contiguous() for g, p in zip(grads, params)]
    if ctx.aux_mode == AUX_TRAJECTORY:
        grad_params, grad_lr = OPS.inner_loop_backward(params, x, y, lr, *ctx.hyper, aux, v)
        return list(grad_params), None, None, list(grad_lr), None, None, None, None, None
    # First order: every step's Jacobian is the identity, and the lr gradient is
    # -sum over tasks of (sum over steps of the inner gradients) * v.
    grad_params = [g.sum(0) for g in v]
    grad_lr = [None] * ctx.n_lr  # lr needs no gradient unless it was saved for
    if ctx.aux_mode == AUX_GRAD_SUMS:
        sums = aux.split([p.numel() for p in params], dim=1)  # (T, numel) each
        grad_lr = [-(s.view_as(g) * g).sum(0) for s, g in zip(sums, v)]
    return grad_params, None, None, grad_lr, None, None, None, None, None


def _maml_step_fake(params, support_x, support_y, query_x, query_y, lr, lr_scalar, steps, loss, activation, order):
    return support_x.new_empty(()), [torch.empty_like(p) for p in params], [torch.empty_like(a) for a in lr]


def _multihead_linear_fake(x, weight, bias, head_ids):
    if head_ids is None:
        return x.new_empty((x.shape[0], weight.shape[0], weight.shape[1]))  # (B, H, C)
    return x.new_empty((x.shape[0], weight.shape[1]))  # (B, C)


def _multihead_routed_backward_fake(grad_out, x, weight, head_ids):
    return torch.empty_like(x), torch.empty_like(weight), weight.new_empty(weight.shape[:2])


def _multihead_linear_setup(ctx, inputs, output):
    x, weight, bias, head_ids = inputs
    ctx.save_for_backward(x, weight, head_ids)


def _multihead_linear_backward(ctx, grad_out):
    x, weight, head_ids = ctx.saved_tensors
    h, c, d = weight.shape
    if head_ids is not None:
        if torch.is_grad_enabled():
            raise RuntimeError("mtl_deploy.ops.multihead_linear: double backward of the routed op is not supported")
        dx, dw, db = OPS.multihead_linear_routed_backward(grad_out.contiguous(), x, weight, head_ids)
        return dx, dw, db, None
    g = grad_out.reshape(x.shape[0], h * c)  # (B, H*C)
    dx = g @ weight.reshape(h * c, d)  # (B, D)
    dw = (g.t() @ x).view(h, c, d)  # (H, C, D)
    return dx, dw, g.sum(0).view(h, c), None


def register() -> None:
    """Attaches fake kernels and autograd to the ops the C++ library defined."""
    lib = torch.library
    lib.register_fake("mtl_deploy::inner_loop")(_inner_loop_fake)
    lib.register_fake("mtl_deploy::inner_loop_backward")(_inner_loop_backward_fake)
    lib.register_autograd("mtl_deploy::inner_loop", _inner_loop_backward, setup_context=_inner_loop_setup)
    lib.register_fake("mtl_deploy::maml_step")(_maml_step_fake)
    lib.register_fake("mtl_deploy::multihead_linear")(_multihead_linear_fake)
    lib.register_fake("mtl_deploy::multihead_linear_routed_backward")(_multihead_routed_backward_fake)
    lib.register_autograd(
        "mtl_deploy::multihead_linear", _multihead_linear_backward, setup_context=_multihead_linear_setup
    )
