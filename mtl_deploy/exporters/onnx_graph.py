"""Trace a model into one ONNX graph with the dynamo exporter: every task head is a named
output (or, routed, one output picked per row by `task_id`), the batch axis is symbolic,
and only standard `ai.onnx` operators appear."""

from __future__ import annotations

import contextlib
import logging
import warnings

import onnx
import torch
from torch import nn

from mtl_deploy.errors import MtlDeployError

INPUT_NAME = "x"
TASK_ID_NAME = "task_id"
ROUTED_OUTPUT = "prediction"
BATCH_DIM = "batch"
STANDARD_DOMAINS = ("", "ai.onnx")


class TupleOutputs(nn.Module):
    """Expose a dict-returning multi-task model as a tuple in task order (ONNX outputs are
    positional; names are attached by the exporter)."""

    def __init__(self, model: nn.Module, task_names: list[str]):
        super().__init__()
        self.model, self.task_names = model, list(task_names)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(x)
        return tuple(outputs[name] for name in self.task_names)


@contextlib.contextmanager
def quiet_exporter():
    """The exporter logs optional-dependency notes and internal deprecations that say
    nothing about the user's model; keep the command's output about the model."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message="# The axis name")  # shared dynamic axes are fine
            yield
    finally:
        logger.setLevel(level)


class RoutedOutputs(nn.Module):
    """One output for a batch that mixes tasks: row i is task `task_id[i]`'s prediction.
    All heads run and a Gather picks each row's own (heads are small next to the trunk)."""

    def __init__(self, model: nn.Module, task_names: list[str]):
        super().__init__()
        self.model, self.task_names = model, list(task_names)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        outputs = self.model(x)
        stacked = torch.stack([outputs[name] for name in self.task_names], dim=1)  # (B, H, C)
        index = task_id.reshape(-1, 1, 1).expand(-1, 1, stacked.shape[2])  # (B, 1, C)
        return torch.gather(stacked, 1, index).squeeze(1)  # (B, C)


def trace_onnx(wrapper: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str],
               output_names: list[str], opset: int, dynamic_shapes: tuple | None = None) -> onnx.ModelProto:
    """The ONNX graph of `wrapper` (the one place that calls the exporter): the first axis
    of every input dynamic (`batch`), or the axes `dynamic_shapes` names."""
    if len(example[0]) < 2:
        raise ValueError("export needs an example batch of at least 2 rows, or the batch axis gets fixed to 1")
    if dynamic_shapes is None:
        batch = torch.export.Dim(BATCH_DIM)
        dynamic_shapes = tuple({0: batch} for _ in example)
    try:
        with quiet_exporter():
            program = torch.onnx.export(
                wrapper.eval(), example, dynamo=True, opset_version=opset, input_names=input_names,
                output_names=output_names, dynamic_shapes=dynamic_shapes, verbose=False,
            )
    except Exception as err:  # the exporter raises many types; the user needs the first line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MtlDeployError(f"ONNX export failed: {first}") from err
    proto = program.model_proto
    foreign = sorted({node.domain for node in proto.graph.node if node.domain not in STANDARD_DOMAINS})
    if foreign:
        raise MtlDeployError(f"the graph uses non-standard operator domains {foreign}; it would not run everywhere")
    return proto
