"""int8 beside an ONNX export: ONNX Runtime dynamic quantization (int8 weights, activations
quantized on the fly), with what it costs and buys measured before it is kept.

Measured on the export's own inputs against the float32 graph: file size, median latency
at batch 64 on one thread, and per output the error of int8 relative to the spread of the
float32 outputs (regression) or the share of rows whose predicted class changes
(classification). Past `max_error` the whole export is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from onnxruntime.quantization import QuantType, quantize_dynamic

from mtl_deploy.errors import MtlDeployError
from mtl_deploy.exporters.graphs import routed_feeds
from mtl_deploy.exporters.latency import median_ms
from mtl_deploy.exporters.verify import check_graph
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


def add_int8(staging: Path, manifest: dict, rows: dict[str, np.ndarray], max_error: float) -> dict:
    """Write model.int8.onnx next to model.onnx; return its report for the manifest."""
    source, target = staging / manifest["artifact"], staging / INT8_FILE
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs generic advice through the root logger
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    check_graph(target)
    feeds = {name: np.ascontiguousarray(values[:64]) for name, values in rows.items()}
    if manifest.get("routed"):
        feeds = routed_feeds(feeds, len(manifest["tasks"]))
    sessions = {"float32": session_for(source, threads=1), "int8": session_for(target, threads=1)}
    names = [o["name"] for o in manifest["outputs"]]
    outputs = {kind: dict(zip(names, s.run(names, feeds))) for kind, s in sessions.items()}
    kinds = {spec["output"]: spec["kind"] for spec in manifest["tasks"].values()}
    change = {name: output_change(outputs["float32"][name], outputs["int8"][name], kinds[name]) for name in names}
    worst = max(change, key=change.get)
    if change[worst] > max_error:
        raise QuantizationError(f"int8 changes output {worst!r} by {change[worst]:.3g} (bound {max_error:g}); "
                                "no export was written; raise --max-quantization-error or keep float32")
    latency = {kind: median_ms(lambda s=s: s.run(None, feeds), repeats=50, warmup=5) for kind, s in sessions.items()}
    return {"artifact": INT8_FILE, "method": "onnxruntime dynamic quantization, int8 weights",
            "bytes": {"float32": source.stat().st_size, "int8": target.stat().st_size},
            "size_ratio": target.stat().st_size / source.stat().st_size,
            "latency_ms_batch64_1thread": latency, "output_change": change, "max_error": max_error,
            "output_change_meaning": "regression: RMS(int8 - float32) / std(float32); classes: share of rows whose "
                                     "predicted class changes"}
