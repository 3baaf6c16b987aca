"""Meta-train MAML on sinusoid regression, adapt it to a new sinusoid from 10 points, and
export the adapted model to ONNX with proved parity.
Usage: python examples/few_shot_adaptation.py [OUT_DIR] [ITERATIONS]"""

import sys
from pathlib import Path

import numpy as np
import torch

import mtl_deploy
from mtl_deploy.config import resolve_config
from mtl_deploy.meta.train import meta_train_and_save

out = Path(sys.argv[1] if len(sys.argv) > 1 else "fewshot-out")
iterations = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
config = resolve_config(preset="sinusoid-maml", overrides={"meta.iterations": iterations})
meta_train_and_save(config, out / "maml", progress=False)

# A new task: y = 3 sin(x - 1), known from 10 labelled points only.
x = np.random.default_rng(0).uniform(-5, 5, size=(10, 1)).astype(np.float32)
adapted = mtl_deploy.adapt(out / "maml", x, 3 * np.sin(x - 1))  # 10 SGD steps, lr 0.01, as meta-trained
mtl_deploy.save(adapted, out / "adapted")
report = mtl_deploy.export(out / "adapted", out / "export")

query = torch.linspace(-5, 5, 100)[:, None]
with torch.no_grad():
    mse = float((adapted(query)["y"] - 3 * torch.sin(query - 1)).pow(2).mean())
print(f"query MSE after adaptation: {mse:.3f}; export parity passed: {report.parity.passed}")
