"""What an ONNX export of a multi-task model consists of, per graph layout: the module to
trace, its example inputs and names, how a batch of rows becomes the graph's inputs, and
what PyTorch says the outputs must be."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mtl_deploy.errors import InputError
from mtl_deploy.exporters.onnx_graph import INPUT_NAME, ROUTED_OUTPUT, TASK_ID_NAME, RoutedOutputs, TupleOutputs
from mtl_deploy.exporters.verify import random_inputs, single_input, torch_outputs


@dataclass
class GraphPlan:
    wrapper: nn.Module
    example: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    make_feeds: Callable[[np.ndarray], dict]
    expected: Callable[[dict], dict]


def multi_output_graph(model: nn.Module, names: list[str]) -> GraphPlan:
    """Input `x`, one output per task named after it."""
    if INPUT_NAME in names:
        raise InputError(f"a task may not be named {INPUT_NAME!r}: it is the graph's input name; rename the task")
    return GraphPlan(TupleOutputs(model, names), (random_inputs(model, 4),), [INPUT_NAME], list(names),
                     single_input, torch_outputs(model, names))


def mixed_task_ids(rows: int, tasks: int) -> np.ndarray:
    """A batch that mixes every task, in no simple order."""
    return (np.arange(rows, dtype=np.int64) * 7 + 3) % tasks


def routed_graph(model: nn.Module, names: list[str]) -> GraphPlan:
    """Inputs `x` and `task_id`, one output: each row's own task's prediction."""
    sizes = {t.name: t.out_dim for t in model.tasks}
    if len(set(sizes.values())) != 1:
        raise InputError(f"a routed graph needs heads of one output size, got {sizes}; export without --routed")
    per_task = torch_outputs(model, names)

    def make_feeds(x: np.ndarray) -> dict:
        return {INPUT_NAME: x, TASK_ID_NAME: mixed_task_ids(len(x), len(names))}

    def expected(feeds: dict) -> dict:
        stacked = np.stack([per_task(feeds)[name] for name in names], axis=1)  # (B, H, C)
        return {ROUTED_OUTPUT: stacked[np.arange(len(stacked)), feeds[TASK_ID_NAME]]}

    example = (random_inputs(model, 4), torch.tensor(mixed_task_ids(4, len(names))))
    return GraphPlan(RoutedOutputs(model, names), example, [INPUT_NAME, TASK_ID_NAME], [ROUTED_OUTPUT],
                     make_feeds, expected)
