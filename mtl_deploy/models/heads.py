"""Task heads stored stacked and run through the multi-head kernel.

Every task has a linear head. Heads of one output size C form a stack: one (H, C, D)
weight and one (H, C) bias, so all of them run as one `ops.multihead_linear` call in
training and in PyTorch serving. Features shared by every task go through the
all-heads path; per-task features (cross-stitch columns, MMoE mixtures) and routed
batches (`task_ids`, one task per row) go through the routed kernel.

MLP heads (`spec`) put each task's own hidden layers before its linear layer.

Checkpoints written with one `nn.Linear` per task (`heads.<task>.weight` / `.bias`) are
read into the stacked layout when they load.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtl_deploy import ops
from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.errors import InputError

Features = torch.Tensor | dict[str, torch.Tensor]  # (B, D) shared, or task name -> (B, D)


class HeadStack(nn.Module):
    """The heads of the tasks `names`, all of output size C, as one stacked Linear."""

    def __init__(self, names: list[str], linears: list[nn.Linear]):
        super().__init__()
        self.names = list(names)
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in linears]))  # (H, C, D)
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in linears]))  # (H, C)


HEAD_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def check_head_spec(spec) -> dict | None:
    """None (one linear head per task) or an MLP head spec: {"hidden": [widths],
    "activation": relu | gelu | tanh, "dropout": p}, with its defaults filled in."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or set(spec) - {"hidden", "activation", "dropout"}:
        raise InputError(f"heads must be None or {{'hidden': [...], 'activation': ..., 'dropout': ...}}, got {spec!r}")
    hidden, activation, dropout = spec.get("hidden"), spec.get("activation", "relu"), spec.get("dropout", 0.0)
    if not isinstance(hidden, list) or not hidden or not all(isinstance(w, int) and w >= 1 for w in hidden):
        raise InputError(f"heads.hidden must be a non-empty list of positive widths, got {hidden!r}")
    if activation not in HEAD_ACTIVATIONS:
        raise InputError(f"heads.activation must be one of {', '.join(HEAD_ACTIVATIONS)}, got {activation!r}")
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise InputError(f"heads.dropout must be in [0, 1), got {dropout!r}")
    return {"hidden": list(hidden), "activation": activation, "dropout": float(dropout)}


def head_mlp(width: int, spec: dict) -> nn.Sequential:
    """One task's hidden layers (Linear, activation, dropout per width) before its output Linear."""
    layers: list[nn.Module] = []
    for out in spec["hidden"]:
        layers += [nn.Linear(width, out), HEAD_ACTIVATIONS[spec["activation"]]()]
        if spec["dropout"]:
            layers.append(nn.Dropout(spec["dropout"]))
        width = out
    return nn.Sequential(*layers)


class TaskHeads(nn.Module):
    """One head per task on `width` features: a linear layer, stacked per output size,
    after the task's own hidden layers when `spec` asks for MLP heads.

    `heads(features)` returns task name -> (B, out_dim); `heads.routed(features,
    task_ids)` returns (B, C), row i through task `task_ids[i]`'s head.
    """

    def __init__(self, width: int, tasks: list[TaskSpec], spec: dict | None = None):
        super().__init__()
        self.task_names = [t.name for t in tasks]
        self.spec = check_head_spec(spec)
        # Each task's hidden layers make its own features, which the stacked output
        # layers read as per-task rows (as for cross-stitch columns).
        self.hidden = None if self.spec is None else nn.ModuleDict({t.name: head_mlp(width, self.spec) for t in tasks})
        width = width if self.spec is None else self.spec["hidden"][-1]
        # One nn.Linear per task, in task order, so the initial weights are exactly
        # those of separate heads drawn from the same seed.
        linears = {t.name: nn.Linear(width, t.out_dim) for t in tasks}
        sizes = {t.name: t.out_dim for t in tasks}
        groups: dict[int, list[str]] = {}
        for name in self.task_names:
            groups.setdefault(sizes[name], []).append(name)
        self.stacks = nn.ModuleDict({f"out{c}": HeadStack(names, [linears[n] for n in names])
                                     for c, names in groups.items()})
        self.register_load_state_dict_pre_hook(_stack_per_task_heads)
        self._serving = None  # (parameter key, weight, bias, task sizes) of _serve
        # The Parameter objects stay (loading and .to() change their data in place), so
        # _serve reads them from a plain list rather than through module lookups.
        self._stack_params = [t for stack in self.stacks.values() for t in (stack.weight, stack.bias)]

    def _through_hidden(self, features: Features) -> Features:
        if self.hidden is None:
            return features
        return {name: mlp(features if isinstance(features, torch.Tensor) else features[name])
                for name, mlp in self.hidden.items()}

    def forward(self, features: Features) -> dict[str, torch.Tensor]:
        features = self._through_hidden(features)
        outputs: dict[str, torch.Tensor] = {}
        if torch.compiler.is_exporting():
            # an exported graph gets one Gemm per head, with no stack to build and split again
            outputs = {name: F.linear(features if isinstance(features, torch.Tensor) else features[name],
                                      stack.weight[i], stack.bias[i])
                       for stack in self.stacks.values() for i, name in enumerate(stack.names)}
            return {name: outputs[name] for name in self.task_names}
        if isinstance(features, torch.Tensor) and len(self.stacks) > 1 and self._serving_eagerly():
            return self._serve(features)
        for stack in self.stacks.values():
            if isinstance(features, torch.Tensor):
                every = ops.multihead_linear(features, stack.weight, stack.bias)  # (B, H, C)
            else:
                every = _per_task_rows(stack, features)
            outputs.update(zip(stack.names, every.unbind(1)))
        return {name: outputs[name] for name in self.task_names}

    def _serving_eagerly(self) -> bool:
        """No gradient wanted, and no tracer or compiler recording the forward (they
        must see the parameters, not a cached copy of them)."""
        if torch.is_grad_enabled() and any(t.requires_grad for t in self._stack_params):
            return False
        return not (torch.jit.is_tracing() or torch.compiler.is_compiling())

    def _serve(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Serving with no gradient: every head of every output size as one stack of one
        (sum C)-wide head in task order, one GEMM through the kernel, split per task. The
        concatenated weights are rebuilt only when a stack's parameters change (storage or
        version)."""
        key = tuple((t.data_ptr(), t._version) for t in self._stack_params)
        if self._serving is None or self._serving[0] != key:
            rows = {name: (stack, i) for stack in self.stacks.values() for i, name in enumerate(stack.names)}
            weight = torch.cat([rows[n][0].weight.detach()[rows[n][1]] for n in self.task_names])  # (sum C, D)
            bias = torch.cat([rows[n][0].bias.detach()[rows[n][1]] for n in self.task_names])  # (sum C,)
            sizes = [rows[n][0].weight.shape[1] for n in self.task_names]
            self._serving = (key, weight.unsqueeze(0), bias.unsqueeze(0), sizes)
        _, weight, bias, sizes = self._serving
        every = ops.multihead_linear(features, weight, bias).squeeze(1)  # (B, sum C)
        return dict(zip(self.task_names, every.split_with_sizes(sizes, 1)))

    def routed(self, features: Features, task_ids: torch.Tensor) -> torch.Tensor:
        """(B, C): row i through the head of task `task_ids[i]` (task order)."""
        if len(self.stacks) != 1:
            sizes = sorted(int(key[3:]) for key in self.stacks)
            raise InputError(f"a routed forward needs heads of one output size, got sizes {sizes}; "
                             "call the model without task_ids")
        stack = next(iter(self.stacks.values()))
        features = self._through_hidden(features)
        if not isinstance(features, torch.Tensor):
            stacked = torch.stack([features[name] for name in stack.names])  # (H, B, D)
            features = stacked[task_ids, torch.arange(stacked.shape[1], device=stacked.device)]  # (B, D) own rows
        return ops.multihead_linear(features, stack.weight, stack.bias, task_ids)


def _per_task_rows(stack: HeadStack, features: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, H, C) when each task reads its own features: one routed batch of H * B rows."""
    rows = torch.cat([features[name] for name in stack.names])  # (H * B, D) task-major
    h, batch = len(stack.names), rows.shape[0] // len(stack.names)
    ids = torch.arange(h, device=rows.device).unsqueeze(1).expand(h, batch).contiguous().view(-1)  # (H * B,) row's task
    out = ops.multihead_linear(rows, stack.weight, stack.bias, ids)  # (H * B, C)
    return out.view(h, batch, -1).transpose(0, 1)  # (B, H, C)


def _stack_per_task_heads(module: TaskHeads, state_dict: dict, prefix: str, *_args) -> None:
    """Rewrite `<prefix><task>.weight/.bias` (one nn.Linear per task) as the stacks."""
    for key, stack in module.stacks.items():
        for part in ("weight", "bias"):
            old = [f"{prefix}{name}.{part}" for name in stack.names]
            if all(k in state_dict for k in old):
                state_dict[f"{prefix}stacks.{key}.{part}"] = torch.stack([state_dict.pop(k) for k in old])
