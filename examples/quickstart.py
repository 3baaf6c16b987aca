"""Train a multi-task model on the built-in synthetic family, save it, export it to ONNX
with proved parity, and reload it. Usage: python examples/quickstart.py [OUT_DIR]"""

import sys
from pathlib import Path

import torch

import mtl_deploy
from mtl_deploy.config import resolve_config

out = Path(sys.argv[1] if len(sys.argv) > 1 else "quickstart-out")
config = resolve_config(preset="synthetic-related")          # or resolve_config("my_config.json")
fitted = mtl_deploy.train(config, out / "checkpoint", progress=False)    # trains and writes the checkpoint
report = mtl_deploy.export(out / "checkpoint", out / "export")  # raises ParityError on a mismatch

model = mtl_deploy.load(out / "checkpoint")
with torch.no_grad():
    predictions = model(fitted.val.x[:3])  # dict: task name -> (3, out_dim)
for task, parity in report.parity.outputs.items():
    print(f"{task:8s} {tuple(predictions[task].shape)}  max abs error vs ONNX Runtime {parity.max_abs_error:.2e}")
