"""The functional core of the gradient-based learners: MAML (second order), first-order
MAML, Meta-SGD, ANIL and Reptile share one inner loop, batched over the tasks of a
meta-batch.

What is adapted follows `FewShotModel.adapted_parameters`. A whole MLP, or a linear head
on trunk features computed once per task (ANIL), runs in `mtl_deploy.ops.inner_loop`
(the fused kernel); a whole MLP's meta-step runs in `mtl_deploy.ops.maml_step`. A whole network of any other kind (a ConvNet) runs in
`functional_inner_loop`: torch.func's per-task gradients, vmapped over the tasks.

Two options of the MAML literature: a head learning rate of its own (`head_lr`), and
Proto-MAML's head that starts each task from the task's class prototypes (`proto_init`,
Triantafillou et al., 2020), which runs in `functional_inner_loop` too.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from mtl_deploy import ops
from mtl_deploy.data.episodes import Episodes
from mtl_deploy.errors import InputError
from mtl_deploy.models.fewshot import FewShotModel
from mtl_deploy.models.trunks import MLPTrunk
from mtl_deploy.ops.reference import mlp_forward


def adapts_whole_network(model: FewShotModel, head_only: bool) -> bool:
    """True when the fused kernel adapts the whole MLP, not a head on trunk features."""
    return not head_only and isinstance(model.trunk, MLPTrunk) and len(model.adapted_parameters()) > 2


def adapts_through_functional(model: FewShotModel, head_only: bool) -> bool:
    """True when a whole non-MLP network adapts, through `functional_inner_loop`."""
    return not head_only and not isinstance(model.trunk, MLPTrunk)


def _network(model: FewShotModel, head_only: bool = False) -> torch.nn.Module:
    """Trunk then head as one module, whose parameters are `model.adapted_parameters()`;
    the head alone for `head_only`."""
    return model.head if head_only else torch.nn.Sequential(model.trunk, model.head)


def prototype_head(features: torch.Tensor, labels: torch.Tensor, ways: int) -> list[torch.Tensor]:
    """Proto-MAML: the linear head (T, ways, F), (T, ways) whose logits 2c·q − ‖c‖² rank the
    classes as ProtoNets' −‖q − c‖² do, from support features (T, S, F) and labels (T, S)."""
    onehot = F.one_hot(labels, ways).to(features.dtype)  # (T, S, ways)
    centres = onehot.transpose(1, 2) @ features / onehot.sum(1).unsqueeze(-1)  # (T, ways, F)
    return [2 * centres, -centres.pow(2).sum(-1)]


def functional_inner_loop(model: FewShotModel, x: torch.Tensor, y: torch.Tensor, *, steps: int,
                          lr: float | list, order: int, head_only: bool = False,
                          head_init: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """`steps` SGD steps per task of the whole network on normalised inputs x (T, K, ...),
    or of the head on features (`head_only`), as `ops.inner_loop` does for an MLP: each
    task's parameters (T, *p.shape), second order (gradients through every step) or first
    order (each step's gradient a constant). `head_init` gives each task its own starting
    head [(T, C, F), (T, C)]."""
    network = _network(model, head_only)
    names = [name for name, _ in network.named_parameters()]
    loss_name = _loss_name(model)

    def task_loss(params: dict, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(network, params, (inputs,))
        if loss_name == "mse":
            return (out - targets).pow(2).mean()
        return F.cross_entropy(out, targets)

    task_gradients = torch.func.vmap(torch.func.grad(task_loss))
    t = x.shape[0]
    start = [p.unsqueeze(0).expand(t, *p.shape) for p in adapted_layers(model, head_only)]
    if head_init is not None:
        start[-2:] = head_init
    thetas = dict(zip(names, start))
    rates = dict(zip(names, lr)) if isinstance(lr, list) else dict.fromkeys(names, lr)
    second_order = order == 2 and torch.is_grad_enabled()
    for _ in range(steps):
        inputs = thetas if second_order else {n: th.detach() for n, th in thetas.items()}
        grads = task_gradients(inputs, x, y)
        thetas = {n: th - rates[n] * (grads[n] if second_order else grads[n].detach()) for n, th in thetas.items()}
    return [th.contiguous() for th in thetas.values()]


def _loss_name(model: FewShotModel) -> str:
    return "mse" if model.task.kind == "regression" else "cross_entropy"


def _activation(model: FewShotModel) -> str:
    activation = getattr(model.trunk, "activation", "relu")
    if activation not in ("relu", "tanh"):
        raise InputError(f"the inner loop supports relu and tanh MLPs, not {activation!r}; change model.trunk.activation")
    return activation


def inner_inputs(model: FewShotModel, x: torch.Tensor, head_only: bool) -> torch.Tensor:
    """(T, K, *input_shape) -> what the adapted layers see: normalised inputs for a whole
    network (flattened for an MLP), trunk features for a head (computed once per task)."""
    t, k = x.shape[:2]
    flat = x.reshape(t * k, *x.shape[2:])
    if adapts_through_functional(model, head_only):
        return model.normalize(flat).reshape(x.shape)  # (T, K, *input_shape)
    if adapts_whole_network(model, head_only):
        return model.normalize(flat).reshape(t, k, -1)  # (T, K, D)
    return model.embed(flat).reshape(t, k, -1)  # (T, K, F)


def adapted_layers(model: FewShotModel, head_only: bool) -> list[torch.nn.Parameter]:
    params = model.adapted_parameters()
    return params[-2:] if head_only else params


def inner_rates(model: FewShotModel, params: list[torch.Tensor], lr: float, head_lr: float | None):
    """The inner learning rates: Meta-SGD's learned ones, `lr` for all, or `lr` for the
    trunk and `head_lr` for the head (the last two parameters), one tensor per parameter."""
    if model.inner_lrs is not None:
        return list(model.inner_lrs)[-len(params):]
    if head_lr is None or head_lr == lr:
        return lr
    return [torch.full_like(p, lr if i < len(params) - 2 else head_lr) for i, p in enumerate(params)]


def adapt_params(model: FewShotModel, support_x: torch.Tensor, support_y: torch.Tensor, *, steps: int,
                 lr: float, order: int, head_only: bool = False, head_lr: float | None = None,
                 proto_init: bool = False) -> list[torch.Tensor]:
    """Adapted layer parameters per task, each (T, *p.shape). Meta-SGD models use their
    learned per-element learning rates instead of `lr`; `head_lr` sets the head's."""
    params = adapted_layers(model, head_only)
    rates = inner_rates(model, params, lr, head_lr)
    if proto_init:
        if model.task.kind == "regression":
            raise InputError("meta.proto_init needs a classification family; remove it for regression")
        inputs = inner_inputs(model, support_x, head_only)
        t, k = support_x.shape[:2]
        features = inputs if head_only else model.embed(support_x.reshape(t * k, *support_x.shape[2:])).view(t, k, -1)
        return functional_inner_loop(model, inputs, support_y, steps=steps, lr=rates, order=order,
                                     head_only=head_only,
                                     head_init=prototype_head(features, support_y, model.task.out_dim))
    if adapts_through_functional(model, head_only):
        return functional_inner_loop(model, inner_inputs(model, support_x, head_only), support_y, steps=steps,
                                     lr=rates, order=order)
    activation = _activation(model) if adapts_whole_network(model, head_only) else "relu"
    return ops.inner_loop(params, inner_inputs(model, support_x, head_only), support_y, steps=steps, lr=rates,
                          loss=_loss_name(model), activation=activation, order=order)


def predict_with(model: FewShotModel, params: list[torch.Tensor], x: torch.Tensor, head_only: bool = False):
    """Outputs (T, Q, out) of each task's adapted parameters on its inputs x (T, Q, ...)."""
    features = inner_inputs(model, x, head_only)
    if adapts_through_functional(model, head_only):
        network = _network(model)
        names = [name for name, _ in network.named_parameters()]
        forward = torch.func.vmap(lambda p, inputs: torch.func.functional_call(network, p, (inputs,)))
        return forward(dict(zip(names, params)), features)
    activation = _activation(model) if adapts_whole_network(model, head_only) else "relu"
    return mlp_forward(params, features, activation)


def task_losses(model: FewShotModel, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(T,) each task's mean query loss."""
    if model.task.kind == "regression":
        return (outputs - targets).pow(2).mean(dim=(1, 2))
    t, q, c = outputs.shape
    return F.cross_entropy(outputs.reshape(t * q, c), targets.reshape(t * q), reduction="none").view(t, q).mean(1)


def maml_loss(model: FewShotModel, episodes: Episodes, *, steps: int, lr: float, order: int,
              head_only: bool = False, head_lr: float | None = None, proto_init: bool = False) -> torch.Tensor:
    """Mean query loss after adaptation: its gradient is the (first- or second-order) MAML
    meta-gradient, for Meta-SGD also with respect to the learning rates."""
    params = adapt_params(model, episodes.support_x, episodes.support_y, steps=steps, lr=lr, order=order,
                          head_only=head_only, head_lr=head_lr, proto_init=proto_init)
    return task_losses(model, predict_with(model, params, episodes.query_x, head_only), episodes.query_y).mean()


def fused_meta_step(model: FewShotModel, episodes: Episodes, *, steps: int, lr: float, order: int) -> float | None:
    """For a whole MLP, the meta-step of `maml_loss` in one fused call (`ops.maml_step`):
    the meta-gradient is added to the parameters' (and learned rates') `.grad` and the
    query loss returned. None for any other model, which goes through `maml_loss`."""
    if not adapts_whole_network(model, head_only=False):
        return None
    params = model.adapted_parameters()
    rates = lr if model.inner_lrs is None else list(model.inner_lrs)
    loss, grads, grad_lr = ops.maml_step(
        params, inner_inputs(model, episodes.support_x, False), episodes.support_y,
        inner_inputs(model, episodes.query_x, False), episodes.query_y, steps=steps, lr=rates,
        loss=_loss_name(model), activation=_activation(model), order=order)
    for param, grad in zip([*params, *([] if model.inner_lrs is None else rates)], [*grads, *grad_lr]):
        param.grad = grad if param.grad is None else param.grad + grad
    return float(loss)


@torch.no_grad()
def reptile_direction(model: FewShotModel, episodes: Episodes, *, steps: int, lr: float) -> list[torch.Tensor]:
    """Reptile's update direction θ − mean_tasks(θ̃), with θ̃ adapted on support and query
    together; fed to the outer optimiser as if it were a gradient."""
    x = torch.cat([episodes.support_x, episodes.query_x], dim=1)
    y = torch.cat([episodes.support_y, episodes.query_y], dim=1)
    adapted = adapt_params(model, x, y, steps=steps, lr=lr, order=1)
    return [p - a.mean(0) for p, a in zip(model.adapted_parameters(), adapted)]


def with_adapted_weights(model: FewShotModel, params: list[torch.Tensor], head_only: bool = False) -> FewShotModel:
    """A copy of `model` with one task's adapted parameters (each (1, *p.shape)) baked in."""
    adapted = copy.deepcopy(model)
    adapted.inner_lrs = None
    with torch.no_grad():
        for target, value in zip(adapted_layers(adapted, head_only), params):
            target.copy_(value[0])
    return adapted.eval()
