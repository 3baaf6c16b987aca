"""The runtimes a parity proof runs an ONNX graph in, each as a function feeds -> outputs.

- `onnxruntime`: ONNX Runtime on the proof's device (the CPU unless asked);
- `reference`: `onnx.reference.ReferenceEvaluator`, the standard's own semantics in numpy;
- `openvino`: OpenVINO's CPU plugin at float32 (`INFERENCE_PRECISION_HINT=f32`). Its default
  on CPUs with bf16 units is bf16, which moves outputs by 0.03 to 0.3 and flips classes
  without a word; a proof at the default would prove nothing;
- `tract`: tract with every input's shape pinned to the batch it runs, the way tract is
  used to optimise a graph (one optimised plan per set of input shapes).

OpenVINO and tract are extras (`mtl-deploy[openvino]`, `mtl-deploy[tract]`); asking for one
that is not installed is one line that names its extra.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from mtl_deploy.errors import InputError, MtlDeployError, first_line
from mtl_deploy.runtime.session import session_for

Outputs = dict[str, np.ndarray]
Runner = Callable[[dict], Outputs]
RUNTIMES = ("onnxruntime", "reference", "openvino", "tract")
DEFAULT_RUNTIMES = ("onnxruntime", "reference")
REPORT_NAMES = {"reference": "onnx.reference", "openvino": "openvino (f32)", "tract": "tract (pinned shapes)"}
PACKAGES = {"onnxruntime": "onnxruntime", "reference": "onnx", "openvino": "openvino", "tract": "tract"}
TRACT_TYPES = {np.dtype(np.float32): "f32", np.dtype(np.int64): "i64", np.dtype(np.int32): "i32",
               np.dtype(np.bool_): "bool"}


def parse_runtimes(runtimes: str | Iterable[str]) -> tuple[str, ...]:
    """Runtime names ("onnxruntime,reference,openvino,tract" or a list), each known and
    installed, in the order given and without repeats."""
    names = [n.strip().lower() for n in (runtimes.split(",") if isinstance(runtimes, str) else runtimes)]
    names = list(dict.fromkeys(n for n in names if n))
    unknown = [n for n in names if n not in RUNTIMES]
    if unknown or not names:
        raise InputError((f"unknown runtime {unknown[0][:40]!r}" if unknown else "no runtime given")
                         + f"; use any of {', '.join(RUNTIMES)}")
    for name in names:
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise InputError(f"runtime {name} is not installed: pip install 'mtl-deploy[{name}]'")
    return tuple(names)


def runtime_versions(runtimes: Iterable[str]) -> dict[str, str]:
    """Runtime name -> the installed version that ran the proof, for the manifest."""
    modules = {name: importlib.import_module(PACKAGES[name]) for name in parse_runtimes(runtimes)}
    return {name: module.version() if name == "tract" else module.__version__.split("-")[0]
            for name, module in modules.items()}


class GatherElements(OpRun):
    """ONNX GatherElements as `np.take_along_axis`: the reference evaluator's own falls back
    to a row loop that is wrong when the gathered axis has more than 32 entries."""

    op_domain = ""

    def _run(self, data, indices, axis=None):
        axis = 0 if axis is None else int(axis)
        indices = np.where(indices < 0, indices + data.shape[axis], indices)
        return (np.take_along_axis(data, indices.astype(np.int64), axis=axis),)


def reference_runner(proto: onnx.ModelProto) -> Runner:
    reference = ReferenceEvaluator(proto, new_ops=[GatherElements])
    names = [o.name for o in proto.graph.output]
    return lambda feeds: dict(zip(names, reference.run(names, feeds)))


def _failed(runtime: str, path: Path, err: BaseException) -> MtlDeployError:
    """A runtime's own error (a Rust or C++ trace) as one line that names the graph."""
    return MtlDeployError(f"{runtime} cannot run {path.name}: {first_line(err)}")


@cache
def _openvino_core():
    import openvino
    return openvino.Core()


def openvino_runner(path: Path, proto: onnx.ModelProto) -> Runner:
    try:
        compiled = _openvino_core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    except Exception as err:  # OpenVINO raises RuntimeError and its own types
        raise _failed("openvino", path, err) from None
    names = [o.name for o in proto.graph.output]

    def run(feeds: dict) -> Outputs:
        try:
            results = compiled(feeds)
        except Exception as err:
            raise _failed("openvino", path, err) from None
        return {name: np.asarray(results[compiled.output(name)]) for name in names}
    return run


def tract_runner(path: Path, proto: onnx.ModelProto) -> Runner:
    import tract

    input_names = [i.name for i in proto.graph.input]
    names = [o.name for o in proto.graph.output]
    plans = {}

    def plan(feeds: dict):
        shapes = tuple((feeds[n].shape, feeds[n].dtype) for n in input_names)
        if shapes not in plans:
            model = tract.onnx().load(str(path))
            for index, (shape, dtype) in enumerate(shapes):
                model.set_input_fact(index, ",".join([*map(str, shape), TRACT_TYPES[dtype]]))
            plans[shapes] = model.into_model().into_runnable()
        return plans[shapes]

    def run(feeds: dict) -> Outputs:
        try:
            outputs = plan(feeds).run([np.ascontiguousarray(feeds[n]) for n in input_names])
        except tract.TractError as err:
            raise _failed("tract", path, err) from None
        return {name: value.to_numpy() for name, value in zip(names, outputs)}
    return run


def graph_runners(path: str | Path, proto: onnx.ModelProto, device: str = "cpu",
                  runtimes: Iterable[str] = DEFAULT_RUNTIMES) -> dict[str, Runner]:
    """Report name -> function(feeds) -> outputs, for each of `runtimes` (see the module).
    ONNX Runtime runs on the CPU unless asked (`session_for`'s devices), so that a proof's
    numbers are the same on every machine; on another device its name says which provider."""
    path, runners = Path(path), {}
    for name in parse_runtimes(runtimes):
        if name == "onnxruntime":
            session = session_for(path, device, threads=0)
            provider = session.get_providers()[0]
            outputs = [o.name for o in proto.graph.output]
            key = "onnxruntime" if provider == "CPUExecutionProvider" else f"onnxruntime ({provider})"
            runners[key] = lambda feeds, s=session, o=outputs: dict(zip(o, s.run(o, feeds)))
        elif name == "reference":
            runners[REPORT_NAMES[name]] = reference_runner(proto)
        else:
            runners[REPORT_NAMES[name]] = (openvino_runner if name == "openvino" else tract_runner)(path, proto)
    return runners
