"""What an ONNX export of a multi-task model consists of, per graph layout: the module to
trace, its example inputs, names and dynamic axes, how a batch of rows becomes the graph's
inputs, and what PyTorch says the outputs must be."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from torch import nn

from mtl_deploy.errors import InputError
from mtl_deploy.exporters.onnx_graph import ROUTED_OUTPUT, TASK_ID_NAME, RoutedOutputs, TupleOutputs
from mtl_deploy.exporters.verify import random_inputs, same_feeds, torch_outputs
from mtl_deploy.models.inputs import BATCH, Signature, signature_of

ONNX_OPS = {schema.name for schema in onnx.defs.get_all_schemas()}  # Relu, Sign, ...: case matters


@dataclass
class GraphPlan:
    wrapper: nn.Module
    example: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_shapes: tuple[tuple[dict, ...]]  # the wrappers take *inputs: one entry, a dict per input
    make_feeds: Callable[[dict], dict]
    expected: Callable[[dict], dict]


def dynamic_shapes(signature: Signature, named: bool = True) -> tuple[dict, ...]:
    """Per input, its symbolic axes as `torch.export.Dim`s; one Dim per axis name, so
    inputs that share an axis (token ids and their mask) share its size (ONNX names its
    axes after them). `named=False` lets torch.export find each axis's range itself
    (`Dim.DYNAMIC`: a sequence bounded by the model's position table), for the formats
    whose axes carry no names."""
    dims = {name: torch.export.Dim(name) if named else torch.export.Dim.DYNAMIC
            for name in [BATCH, *signature.symbolic_axes]}
    return tuple({axis: dims[d] for axis, d in enumerate(spec.shape) if isinstance(d, str)}
                 for spec in signature.specs)


def check_output_names(names: list[str], input_names: list[str]) -> None:
    """Output names that make a valid, unambiguous graph: unique, not an input's name, not
    an ONNX operator's name."""
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"output names {duplicates} appear twice; give every task or output its own name")
    for name in names:
        if name in input_names:
            raise InputError(f"a task or output may not be named {name!r}: it is the graph's input name; rename it")
        if name in ONNX_OPS:
            raise InputError(f"a task or output may not be named {name!r}: it is an ONNX operator's name; rename it")


def multi_output_graph(model: nn.Module, names: list[str]) -> GraphPlan:
    """The model's inputs, one output per task named after it."""
    signature = signature_of(model)
    check_output_names(list(names), signature.names)
    return GraphPlan(TupleOutputs(model, names, signature), tuple(random_inputs(model, 4).values()), signature.names,
                     list(names), (dynamic_shapes(signature),), same_feeds, torch_outputs(model, names))


def mixed_task_ids(rows: int, tasks: int) -> np.ndarray:
    """A batch that mixes every task, in no simple order."""
    return (np.arange(rows, dtype=np.int64) * 7 + 3) % tasks


def routed_feeds(rows: dict, tasks: int) -> dict:
    """The model's inputs and a `task_id` per row that mixes every task."""
    return {**rows, TASK_ID_NAME: mixed_task_ids(len(next(iter(rows.values()))), tasks)}


def routed_graph(model: nn.Module, names: list[str]) -> GraphPlan:
    """The model's inputs and `task_id`, one output: each row's own task's prediction,
    zero-padded to the widest head."""
    signature = signature_of(model)
    if TASK_ID_NAME in signature.names:
        raise InputError(f"a routed graph adds the input {TASK_ID_NAME!r}; the model already has one: rename it")
    check_output_names([ROUTED_OUTPUT], signature.names)
    per_task = torch_outputs(model, names)

    def expected(feeds: dict) -> dict:
        outputs = per_task(feeds)
        width = max(outputs[name].shape[1] for name in names)
        stacked = np.stack([np.pad(outputs[name], ((0, 0), (0, width - outputs[name].shape[1]))) for name in names],
                           axis=1)  # (B, H, C)
        return {ROUTED_OUTPUT: stacked[np.arange(len(stacked)), feeds[TASK_ID_NAME]]}

    shapes = dynamic_shapes(signature)
    example = (*random_inputs(model, 4).values(), torch.tensor(mixed_task_ids(4, len(names))))
    return GraphPlan(RoutedOutputs(model, names, signature), example, [*signature.names, TASK_ID_NAME],
                     [ROUTED_OUTPUT], ((*shapes, {0: shapes[0][0]}),), lambda rows: routed_feeds(rows, len(names)),
                     expected)
