"""The adaptation itself as a traceable module, for on-device few-shot learning in plain
ONNX Runtime: `forward(support_x, support_y, query_x) -> query_pred`, which is
`predict(query_x, *adapt(support_x, support_y))`: the adapted state in between (prototypes,
support embeddings and labels, or adapted weights) is what a task file keeps, so the two
halves are traced as graphs of their own too (`AdaptHalf`, `PredictHalf`).

Nothing here calls autograd or a custom op: the SGD steps of MAML / Meta-SGD / ANIL /
Reptile are unrolled with every layer's gradient written out, and ProtoNet / Matching
Network adaptation is a matmul against the support set. `support_y` is a matrix: one-hot
rows (S, ways) for classification, target values (S, out) for regression; for metric
learners the number of ways is a dynamic axis.
"""

from __future__ import annotations

import torch
from torch import nn

from mtl_deploy.errors import InputError
from mtl_deploy.meta.gradient_based import adapts_through_functional, adapts_whole_network
from mtl_deploy.models.fewshot import FewShotModel, matching_log_probs, squared_distances

METRIC = ("protonet", "matching")


def loss_gradient(output: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """d(mean loss)/d(output) for (S, C) outputs: MSE over every element, or softmax
    cross-entropy against one-hot rows averaged over the S examples."""
    if kind == "regression":
        return 2.0 * (output - target) / output.numel()
    return (torch.softmax(output, dim=1) - target) / output.shape[0]


def sgd_steps(params: list[torch.Tensor], rates: list, x: torch.Tensor, target: torch.Tensor, steps: int,
              activation: str, kind: str) -> list[torch.Tensor]:
    """`steps` SGD steps of an MLP [W1, b1, ...] (activation between layers) on (x, target),
    with the backward pass written layer by layer."""
    act = torch.relu if activation == "relu" else torch.tanh
    layers = len(params) // 2
    for _ in range(steps):
        inputs, pre_activations, h = [], [], x
        for i in range(layers):
            inputs.append(h)
            z = h @ params[2 * i].T + params[2 * i + 1]  # (S, out_i)
            pre_activations.append(z)
            h = act(z) if i < layers - 1 else z
        delta = loss_gradient(h, target, kind)  # (S, out)
        grads: list[torch.Tensor] = [delta] * len(params)
        for i in reversed(range(layers)):
            grads[2 * i] = delta.T @ inputs[i]
            grads[2 * i + 1] = delta.sum(0)
            if i > 0:
                z = pre_activations[i - 1]
                slope = (z > 0).to(z.dtype) if activation == "relu" else 1 - torch.tanh(z) ** 2
                delta = (delta @ params[2 * i]) * slope
        params = [p - r * g for p, r, g in zip(params, rates, grads)]
    return params


def mlp_apply(params: list[torch.Tensor], x: torch.Tensor, activation: str) -> torch.Tensor:
    act = torch.relu if activation == "relu" else torch.tanh
    layers = len(params) // 2
    for i in range(layers):
        x = x @ params[2 * i].T + params[2 * i + 1]
        if i < layers - 1:
            x = act(x)
    return x


class AdapterGraph(nn.Module):
    """Adapts `model` on the support set and predicts the query set, in one graph."""

    def __init__(self, model: FewShotModel, steps: int, lr: float, head_lr: float | None = None):
        super().__init__()
        self.model = model.eval()
        self.algorithm = model.adaptation["algorithm"]
        self.steps = steps
        self.proto_init = bool(model.adaptation.get("proto_init"))  # Proto-MAML: the head starts at the prototypes
        if self.algorithm not in (*METRIC, "anil") and adapts_through_functional(model, False):
            raise InputError(f"an adapter graph writes out the gradient steps of an MLP; this {self.algorithm} model "
                             "adapts a whole ConvNet: adapt it with mtl_deploy.adapt and export the adapted model")
        self.whole_network = self.algorithm not in (*METRIC, "anil") and adapts_whole_network(model, False)
        if self.algorithm not in METRIC:
            layers = model.adapted_parameters() if self.whole_network else model.adapted_parameters()[-2:]
            self.start = nn.ParameterList([nn.Parameter(p.detach().clone(), requires_grad=False) for p in layers])
            rates = ([r.detach().clone() for r in model.inner_lrs][-len(layers):] if model.inner_lrs is not None
                     else [torch.tensor(lr)] * (len(layers) - 2) + [torch.tensor(lr if head_lr is None else head_lr)] * 2)
            for i, rate in enumerate(rates):
                self.register_buffer(f"rate{i}", rate)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.normalize(x).flatten(1) if self.whole_network else self.model.embed(x)

    def state_names(self) -> list[str]:
        """The adapted state's arrays, in the order `adapt` returns them."""
        if self.algorithm == "protonet":
            return ["prototypes"]
        if self.algorithm == "matching":
            return ["support_embeddings", "support_onehot"]  # not support_y: an input of the adapt graph
        return [f"{kind}{i}" for i in range(len(self.start) // 2) for kind in ("weight", "bias")]

    def state_axes(self) -> list[dict[int, str]]:
        """Each state array's axes that vary from task to task (the rest are fixed)."""
        if self.algorithm == "protonet":
            return [{0: "ways"}]
        if self.algorithm == "matching":
            return [{0: "support"}, {0: "support", 1: "ways"}]
        return [{} for _ in self.start]

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        support = self.features(support_x)  # (S, F)
        if self.algorithm == "protonet":
            return (support_y.T @ support / support_y.sum(0).unsqueeze(1),)  # (ways, F)
        if self.algorithm == "matching":
            return support, support_y
        activation = self.activation()
        rates = [getattr(self, f"rate{i}") for i in range(len(self.start))]
        start = list(self.start)
        if self.proto_init:
            embedded = self.model.embed(support_x) if self.whole_network else support
            centres = support_y.T @ embedded / support_y.sum(0).unsqueeze(1)  # (ways, F)
            start[-2:] = [2 * centres, -centres.pow(2).sum(1)]
        return tuple(sgd_steps(start, rates, support, support_y, self.steps, activation, self.model.task.kind))

    def predict(self, query_x: torch.Tensor, *state: torch.Tensor) -> torch.Tensor:
        query = self.features(query_x)  # (Q, F)
        if self.algorithm == "protonet":
            return -self.model.metric_scale * squared_distances(query, state[0])
        if self.algorithm == "matching":
            return matching_log_probs(query, state[0], state[1], self.model.metric_scale)
        return mlp_apply(list(state), query, self.activation())

    def activation(self) -> str:
        return getattr(self.model.trunk, "activation", "relu") if self.whole_network else "relu"

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        return self.predict(query_x, *self.adapt(support_x, support_y))


class _Half(nn.Module):
    """One half of an adapter graph as a module of its own, to trace it alone."""

    def __init__(self, graph: AdapterGraph):
        super().__init__()
        self.adapter = graph  # not `graph`: traced modules have a graph of their own


class AdaptHalf(_Half):
    """`graph.adapt` as a module: (support_x, support_y) -> the adapted state."""

    def forward(self, support_x: torch.Tensor, support_y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # copies: after zero steps the state is the start weights, and a graph output must be computed
        return tuple(value.clone() for value in self.adapter.adapt(support_x, support_y))


class PredictHalf(_Half):
    """`graph.predict` as a module: (query_x, *state) -> query_pred."""

    def forward(self, query_x: torch.Tensor, *state: torch.Tensor) -> torch.Tensor:
        return self.adapter.predict(query_x, *state)
