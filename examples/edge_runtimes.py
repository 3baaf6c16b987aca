"""One model, proved in every runtime it may meet: the ONNX export in ONNX Runtime, the ONNX
reference evaluator, OpenVINO (at float32) and tract (pinned shapes), and an ExecuTorch
program for phones and embedded boards. Needs `pip install 'mtl-deploy[openvino,tract,executorch]'`.
Usage: python examples/edge_runtimes.py [OUT_DIR]"""

import sys
from pathlib import Path

import torch

import mtl_deploy
from mtl_deploy.config import resolve_config
from mtl_deploy.exporters import verify_export
from mtl_deploy.exporters.executorch_export import load_program

out = Path(sys.argv[1] if len(sys.argv) > 1 else "edge-runtimes-out")
config = resolve_config(preset="synthetic-related", overrides={"train.epochs": 20})
fitted = mtl_deploy.train(config, out / "checkpoint", progress=False)

mtl_deploy.export(out / "checkpoint", out / "onnx", quantize="int8", runtimes="onnxruntime,reference,openvino,tract")
report = verify_export(out / "onnx", out / "checkpoint", runtimes="onnxruntime,reference,openvino,tract")
for runtime, error in report.runtime_max_abs_error.items():  # int8: against ONNX Runtime's int8 outputs
    print(f"{runtime:50s} max abs error {error:.1e}")

program = mtl_deploy.export(out / "checkpoint", out / "executorch", format="executorch", max_batch=64)
outputs = load_program(out / "executorch" / "model.pte")(fitted.val.x[:3])  # a tuple in the manifest's order
with torch.no_grad():
    expected = mtl_deploy.load(out / "checkpoint")(fitted.val.x[:3])
gap = max(float((o - expected[t["name"]]).abs().max()) for o, t in zip(outputs, program.manifest["outputs"]))
print(f"model.pte ({program.manifest['max_batch']} rows at most) vs PyTorch {gap:.1e}; "
      f"proved at batches {program.parity.batch_sizes}")
