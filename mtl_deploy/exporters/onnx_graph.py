"""Trace a model into one ONNX graph with the dynamo exporter: every task head is a named
output, the batch axis is symbolic, and only standard `ai.onnx` operators appear."""

from __future__ import annotations

import contextlib
import logging
import warnings

import onnx
import torch
from torch import nn

from mtl_deploy.errors import InputError, MtlDeployError

INPUT_NAME = "x"
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


def trace_onnx(model: nn.Module, task_names: list[str], example: torch.Tensor, opset: int) -> onnx.ModelProto:
    """The ONNX graph of `model` with input `x` (batch dynamic) and one output per task."""
    if INPUT_NAME in task_names:
        raise InputError(f"a task may not be named {INPUT_NAME!r}: it is the graph's input name; rename the task")
    if len(example) < 2:
        raise ValueError("export needs an example batch of at least 2 rows, or the batch axis gets fixed to 1")
    wrapper = TupleOutputs(model, task_names).eval()
    try:
        with quiet_exporter():
            program = torch.onnx.export(
                wrapper, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=list(task_names), dynamic_shapes=({0: torch.export.Dim(BATCH_DIM)},), verbose=False,
            )
    except Exception as err:  # the exporter raises many types; the user needs the first line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MtlDeployError(f"ONNX export failed: {first}") from err
    proto = program.model_proto
    foreign = sorted({node.domain for node in proto.graph.node if node.domain not in STANDARD_DOMAINS})
    if foreign:
        raise MtlDeployError(f"the graph uses non-standard operator domains {foreign}; it would not run everywhere")
    return proto
