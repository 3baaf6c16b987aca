"""Train on your own CSV: feature columns plus one column per task, chosen by name in the
config. Usage: python examples/csv_data.py [OUT_DIR] (writes a demo CSV first)."""

import json
import sys
from pathlib import Path

import numpy as np

import mtl_deploy
from mtl_deploy.config import resolve_config
from mtl_deploy.data import synthetic_family

out = Path(sys.argv[1] if len(sys.argv) > 1 else "csv-out")
out.mkdir(parents=True, exist_ok=True)

# A CSV like the one you bring: f0..f49 are features, price and churn are targets.
data = synthetic_family(n_rows=300)
columns = np.column_stack([data.x.numpy(), data.targets["price"].numpy(), data.targets["churn"].numpy()])
header = [f"f{i}" for i in range(data.x.shape[1])] + ["price", "churn"]
np.savetxt(out / "data.csv", columns, delimiter=",", header=",".join(header), comments="", fmt="%.6g")

config_file = out / "config.json"
config_file.write_text(json.dumps({
    "data": {"source": "csv", "path": str(out / "data.csv"),
             "tasks": [{"name": "price", "kind": "regression"}, {"name": "churn", "kind": "binary"}]},
    "model": {"trunk": {"type": "mlp", "hidden": [32, 32]}},
    "train": {"epochs": 100, "seed": 0},
}, indent=2))
fitted = mtl_deploy.train(resolve_config(config_file), out / "checkpoint", progress=False)
print({task: {k: round(v, 3) for k, v in m.items()} for task, m in fitted.result.val_metrics.items()})
