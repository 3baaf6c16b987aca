"""A user's network as an mtl_deploy multi-task model: `wrap(trunk, tasks, example_inputs=...)`.

The wrapped model is hard sharing on a `ModuleTrunk`: every task's linear head reads the
trunk's pooled features, stacked and run through the multi-head kernel like a built-in
model's. It takes what the examples showed (a tensor, a tuple or a dict of tensors), so
every export, proof and runtime feature works on it through its `signature`. The network
does its own input scaling: the wrapped model adds none.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.errors import InputError
from mtl_deploy.models.heads import TaskHeads, check_head_spec
from mtl_deploy.models.inputs import Signature, example_signature
from mtl_deploy.models.module_trunk import ModuleTrunk, hf_source, trunk_from_config
from mtl_deploy.models.multitask import MultiTaskBase
from mtl_deploy.trust import parse_factory


class WrappedModel(MultiTaskBase):
    """Task heads on any trunk; `forward(inputs)` -> task name -> output."""

    architecture = "wrapped"

    def __init__(self, tasks: list[TaskSpec], trunk: ModuleTrunk, heads: dict | None = None):
        nn.Module.__init__(self)  # no Normalize: the user's network scales its own inputs
        self.tasks = list(tasks)
        self.trunk = trunk
        self.heads = TaskHeads(trunk.out_features, self.tasks, heads)

    @property
    def signature(self) -> Signature:
        return self.trunk.signature

    @property
    def input_shape(self) -> tuple:
        """The first input's row shape (axis names where sizes vary)."""
        return tuple(self.signature.specs[0].shape[1:])

    def task_features(self, inputs) -> torch.Tensor:
        return self.trunk(inputs)

    def config(self) -> dict:
        heads = {} if self.heads.spec is None else {"heads": self.heads.spec}
        return {"architecture": self.architecture, "input_shape": list(self.input_shape),
                "tasks": [t.to_dict() for t in self.tasks], "trunk": self.trunk.config(), **heads}

    @classmethod
    def from_config(cls, config: dict) -> "WrappedModel":
        return cls([TaskSpec.from_dict(t) for t in config["tasks"]], trunk_from_config(config["trunk"]),
                   config.get("heads"))


def _is_transformers_model(trunk) -> bool:
    return type(trunk).__module__.startswith("transformers.") and hasattr(getattr(trunk, "config", None), "to_dict")


def _vocabulary_ranges(signature: Signature, config) -> Signature:
    """Token ids range over the model's vocabulary, not just the ids the examples held."""
    sizes = {"input_ids": getattr(config, "vocab_size", None), "token_type_ids": getattr(config, "type_vocab_size", None)}
    return Signature(tuple(dataclasses.replace(spec, low=0, high=int(sizes[spec.name]))
                           if spec.integer and sizes.get(spec.name) else spec for spec in signature.specs),
                     signature.layout)


def check_tasks(tasks) -> list[TaskSpec]:
    """A non-empty list of TaskSpec with unique names."""
    tasks = list(tasks) if isinstance(tasks, (list, tuple)) else None
    if not tasks or not all(isinstance(t, TaskSpec) for t in tasks):
        raise InputError("tasks must be a non-empty list of mtl_deploy.TaskSpec")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise InputError(f"task names must be unique, got {names}")
    return tasks


def wrap(trunk: nn.Module | dict, tasks: list[TaskSpec], *, example_inputs=None, heads=None, pooling: str = "auto",
         freeze=False, factory: str | None = None, kwargs: dict | None = None,
         axes: dict[str, dict[int, str]] | None = None) -> WrappedModel:
    """An mtl_deploy multi-task model on any network.

    `example_inputs` (a tensor, a tuple of tensors or a dict of named tensors, at least 2
    rows) fixes the input names, dtypes and shapes; axis 1 of 2-D integer inputs is a
    dynamic `sequence` axis, `axes` names others. `pooling` (see `module_trunk`) turns
    the trunk's output into features; one linear head per task sits on them, or with
    `heads={"hidden": [256], "activation": "gelu", "dropout": 0.1}` an MLP head per task
    (its own hidden layers, then its linear layer). `freeze`: True, False, or parameter name
    prefixes. `factory` ("package.module:callable") and `kwargs` say how the trunk is
    rebuilt, which `save` needs; `export` works without them.

    `trunk` may also be a trunk config: `{"type": "transformers", "path": DIR, "pooling":
    "cls"}` reads a local Hugging Face model directory (config.json and safetensors, no
    network), inputs `input_ids` and `attention_mask`; `{"type": "module", "factory": ...}`
    builds a trusted factory's network (see `module_trunk.trunk_from_config`).
    """
    heads = check_head_spec(heads)
    tasks = check_tasks(tasks)
    if isinstance(trunk, dict):
        return WrappedModel(tasks, trunk_from_config(trunk), heads)
    if example_inputs is None:
        raise InputError("wrap needs example_inputs for a network (a tensor, tuple or dict of tensors)")
    if kwargs is not None and factory is None:
        raise InputError("kwargs without factory: say which callable they are for")
    source = None
    if factory is not None:
        parse_factory(factory)
        if not isinstance(kwargs or {}, dict):
            raise InputError(f"kwargs must be a dict, got {type(kwargs).__name__}")
        source = {"type": "module", "factory": factory, "kwargs": dict(kwargs or {})}
    elif _is_transformers_model(trunk):  # a Hugging Face model describes itself: no factory needed
        source = hf_source(trunk)
    signature = example_signature(example_inputs, axes)
    if _is_transformers_model(trunk):
        signature = _vocabulary_ranges(signature, trunk.config)
    return WrappedModel(tasks, ModuleTrunk(trunk, signature, pooling, source, freeze, example_inputs), heads)
