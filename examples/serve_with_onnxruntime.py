"""Serve an export with nothing but onnxruntime and numpy: the manifest names every input
and output. Usage: python examples/serve_with_onnxruntime.py EXPORT_DIR [ROWS]"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

export_dir = Path(sys.argv[1])
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 4
manifest = json.loads((export_dir / "manifest.json").read_text())
session = ort.InferenceSession(str(export_dir / manifest["artifact"]), providers=["CPUExecutionProvider"])

(graph_input,) = manifest["inputs"]
row_shape = graph_input["shape"][1:]  # the first axis is the dynamic batch
x = np.random.default_rng(0).standard_normal((rows, *row_shape)).astype(graph_input["dtype"])
names = [o["name"] for o in manifest["outputs"]]
outputs = dict(zip(names, session.run(names, {graph_input["name"]: x})))

for task, spec in manifest["tasks"].items():
    value = outputs[spec["output"]]
    if spec["kind"] == "multiclass":
        shown = value.argmax(axis=1)
    elif spec["kind"] == "binary":
        shown = (value[:, 0] > 0).astype(int)
    else:
        shown = [round(float(v), 3) for v in value[:, 0]]
    print(f"{task:10s} {spec['kind']:10s} {value.shape} -> {list(shown)}")
