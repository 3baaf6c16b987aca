"""int8 beside an ONNX export: ONNX Runtime dynamic quantization (int8 weights, activations
quantized on the fly), with what it costs and buys measured before it is kept.

Measured on the export's own inputs against the float32 graph: file size, median latency
at batch 64 on one thread, and per output the error of int8 relative to the spread of the
float32 outputs (regression) or the share of rows whose predicted class changes
(classification). Past `max_error` the whole export is refused.

In the other runtimes asked for (`runtimes.py`), the int8 graph is proved against ONNX
Runtime's own int8 outputs, the ones that change was measured on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from mtl_deploy.atomic import sha256_file
from mtl_deploy.errors import MtlDeployError
from mtl_deploy.exporters.graphs import routed_feeds
from mtl_deploy.exporters.latency import median_ms
from mtl_deploy.exporters.onnx_graph import make_portable
from mtl_deploy.exporters.runtimes import graph_runners, parse_runtimes
from mtl_deploy.exporters.verify import (DEFAULT_BATCH_SIZES, ParityError, ParityReport, check_graph, prove_parity,
                                      same_feeds)
from mtl_deploy.runtime.session import session_for

INT8_FILE = "model.int8.onnx"


class QuantizationError(MtlDeployError):
    """int8 changes the outputs more than the bound allows."""


def output_change(float32: np.ndarray, int8: np.ndarray, kind: str) -> float:
    """Regression: RMS error over the float32 outputs' standard deviation. Classes: the
    share of rows whose argmax (or sign, for one logit) changes."""
    if kind in ("regression", "values"):
        return float(np.sqrt(np.mean((int8 - float32) ** 2)) / (float32.std() + 1e-12))
    if float32.shape[1] == 1:
        return float(np.mean((float32[:, 0] > 0) != (int8[:, 0] > 0)))
    return float(np.mean(float32.argmax(1) != int8.argmax(1)))


def int8_feeds(manifest: dict):
    """How a batch of the model's rows becomes the graph's inputs (a routed graph adds task ids)."""
    return (lambda rows: routed_feeds(rows, len(manifest["tasks"]))) if manifest.get("routed") else same_feeds


def prove_int8(path: Path, proto: onnx.ModelProto, manifest: dict, input_sets: dict, runtimes, atol: float,
               rtol: float) -> ParityReport | None:
    """The int8 graph at `path` (`proto`, checked) in every runtime of `runtimes` but ONNX
    Runtime, against ONNX Runtime's int8 outputs on the CPU; None when ONNX Runtime is the
    only one."""
    others = [name for name in parse_runtimes(runtimes) if name != "onnxruntime"]
    if not others:
        return None
    session, names = session_for(path, threads=0), [o.name for o in proto.graph.output]
    expected = lambda feeds: dict(zip(names, session.run(names, feeds)))  # noqa: E731
    return prove_parity(graph_runners(path, proto, runtimes=others), expected, input_sets, DEFAULT_BATCH_SIZES,
                        atol, rtol, int8_feeds(manifest), against="onnxruntime")


def add_int8(staging: Path, manifest: dict, input_sets: dict, max_error: float, runtimes, atol: float,
             rtol: float) -> dict:
    """Write model.int8.onnx next to model.onnx, proved in `runtimes`; return its report
    for the manifest."""
    source, target = staging / manifest["artifact"], staging / INT8_FILE
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs generic advice through the root logger
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    proto = check_graph(make_portable(onnx.load(str(target))))  # quantize_dynamic's shape inference adds value_info
    onnx.save_model(proto, target)
    rows = input_sets.get("real") or next(iter(input_sets.values()))
    feeds = int8_feeds(manifest)({name: np.ascontiguousarray(values[:64]) for name, values in rows.items()})
    sessions = {"float32": session_for(source, threads=1), "int8": session_for(target, threads=1)}
    names = [o["name"] for o in manifest["outputs"]]
    outputs = {kind: dict(zip(names, s.run(names, feeds))) for kind, s in sessions.items()}
    kinds = {spec["output"]: spec["kind"] for spec in manifest["tasks"].values()}
    change = {name: output_change(outputs["float32"][name], outputs["int8"][name], kinds[name]) for name in names}
    worst = max(change, key=change.get)
    if change[worst] > max_error:
        raise QuantizationError(f"int8 changes output {worst!r} by {change[worst]:.3g} (bound {max_error:g}); "
                                "no export was written; raise --max-quantization-error or keep float32")
    parity = prove_int8(target, proto, manifest, input_sets, runtimes, atol, rtol)
    if parity is not None and not parity.passed:
        raise ParityError("model.int8.onnx against ONNX Runtime's int8 outputs: " + parity.failure_message()
                          + "; no export was written")
    latency = {kind: median_ms(lambda s=s: s.run(None, feeds), repeats=50, warmup=5) for kind, s in sessions.items()}
    return {"artifact": INT8_FILE, "sha256": sha256_file(target), **({"parity": parity.to_dict()} if parity else {}),
            "method": "onnxruntime dynamic quantization, int8 weights",
            "bytes": {"float32": source.stat().st_size, "int8": target.stat().st_size},
            "size_ratio": target.stat().st_size / source.stat().st_size,
            "latency_ms_batch64_1thread": latency, "output_change": change, "max_error": max_error,
            "output_change_meaning": "regression: RMS(int8 - float32) / std(float32); classes: share of rows whose "
                                     "predicted class changes"}
