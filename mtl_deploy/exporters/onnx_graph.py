"""Trace a model into one ONNX graph with the dynamo exporter: every task head is a named
output (or, routed, one output picked per row by `task_id`), the batch axis is symbolic,
and only standard `ai.onnx` operators appear."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import traceback
from pathlib import Path
import warnings

import onnx
import onnx.numpy_helper
import torch
import torch.nn.functional as F
from torch import nn

from mtl_deploy.atomic import make_readable
from mtl_deploy.errors import MtlDeployError
from mtl_deploy.models.inputs import Signature

TASK_ID_NAME = "task_id"
ROUTED_OUTPUT = "prediction"
BATCH_DIM = "batch"
STANDARD_DOMAINS = ("", "ai.onnx")


class TupleOutputs(nn.Module):
    """Expose a dict-returning multi-task model as a tuple in task order (ONNX outputs are
    positional; names are attached by the exporter)."""

    def __init__(self, model: nn.Module, task_names: list[str], signature: Signature):
        super().__init__()
        self.model, self.task_names, self.signature = model, list(task_names), signature

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(self.signature.pack(inputs))
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
    All heads run and a Gather picks each row's own (heads are small next to the trunk).
    Heads of different sizes are zero-padded to the widest: a row of a task with C outputs
    reads the first C columns."""

    def __init__(self, model: nn.Module, task_names: list[str], signature: Signature):
        super().__init__()
        self.model, self.task_names, self.signature = model, list(task_names), signature

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        *model_inputs, task_id = inputs
        outputs = self.model(self.signature.pack(model_inputs))
        width = max(outputs[name].shape[1] for name in self.task_names)
        stacked = torch.stack([F.pad(outputs[name], (0, width - outputs[name].shape[1]))
                               for name in self.task_names], dim=1)  # (B, H, C)
        index = task_id.reshape(-1, 1, 1).expand(-1, 1, stacked.shape[2])  # (B, 1, C)
        return torch.gather(stacked, 1, index).squeeze(1)  # (B, C)


def _inner(wrapper: nn.Module) -> nn.Module:
    """The user's network inside the export wrappers (a wrapped trunk, a module exported as
    it is), for messages."""
    model = getattr(wrapper, "model", wrapper)
    for inner in (getattr(getattr(model, "trunk", None), "module", None), getattr(model, "module", None)):
        if isinstance(inner, nn.Module):
            return inner
    return model


def _culprit(err: BaseException) -> str:
    """The line of an exporter error that names what failed (an op, a module, a guard)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for cause in (err.__cause__, err.__context__):
        if cause is not None:
            lines += [line.strip() for line in str(cause).splitlines() if line.strip()]
    for marker in ("Unsupported", "unsupported", "not supported", "aten::", "aten.", "torch.ops", "Could not",
                   "Constraints violated", "guard"):
        hit = next((line for line in lines if marker in line), None)
        if hit:
            return hit[:300]
    return (lines[0] if lines else type(err).__name__)[:300]


def _write_report(err: BaseException) -> str:
    """The exporter's whole error, with its chain, in a file the user can read."""
    handle, path = tempfile.mkstemp(prefix="mtl_deploy-onnx-export-", suffix=".txt")
    with os.fdopen(handle, "w") as report:
        report.write("".join(traceback.format_exception(err)))
    make_readable(Path(path), directory=False)
    return path


def make_portable(proto: onnx.ModelProto) -> onnx.ModelProto:
    """What every runtime reads, in place, for the exporter's graphs and the int8 one.
    Intermediate shapes (`value_info`) carry the symbolic batch name, so runtimes that pin
    input shapes (tract, OpenVINO) see two sizes for one axis; every runtime infers them
    again, so only the inputs' and outputs' shapes stay. `allowzero=1` goes from every
    Reshape to a constant shape without a 0, where it changes nothing and converters that
    lack it (onnx2torch, older mobile builds) would refuse the graph."""
    del proto.graph.value_info[:]
    constants = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        if 0 in onnx.numpy_helper.to_array(constants[node.input[1]]).tolist():
            continue
        kept = [a for a in node.attribute if not (a.name == "allowzero" and a.i == 1)]
        del node.attribute[:]
        node.attribute.extend(kept)
    return proto


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
    except Exception as err:  # the exporter raises many types; the user needs one line and the full report
        raise MtlDeployError(f"ONNX export of {type(_inner(wrapper)).__name__} failed: {_culprit(err)} "
                             f"(full exporter report: {_write_report(err)})") from None
    proto = make_portable(program.model_proto)
    foreign = sorted({node.domain for node in proto.graph.node if node.domain not in STANDARD_DOMAINS})
    if foreign:
        raise MtlDeployError(f"the graph uses non-standard operator domains {foreign}; it would not run everywhere")
    return proto
