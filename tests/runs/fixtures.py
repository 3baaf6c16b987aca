"""Small run configs and a subprocess launcher shared by the distributed and resume tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

from mtl_deploy.runs.state import read_state

MAML = {
    "meta": {"algorithm": "maml", "family": "sinusoid", "shots": 5, "queries": 5, "meta_batch": 5,
             "inner_steps": 1, "inner_lr": 0.01, "outer_lr": 0.01, "iterations": 30, "val_every": 10,
             "val_tasks": 20, "checkpoint_every": 3, "seed": 3},
    "model": {"trunk": {"type": "mlp", "hidden": [16, 16], "activation": "relu"}},
}


def multitask(aggregation: str = "none", weighting: str = "equal") -> dict:
    return {"data": {"source": "synthetic", "synthetic": {"n_rows": 203}, "val_fraction": 0.2},
            "model": {"trunk": {"type": "mlp", "hidden": [16], "activation": "relu"}},
            "train": {"epochs": 4, "batch_size": 32, "patience": 10, "checkpoint_every": 2,
                      "aggregation": aggregation, "weighting": weighting, "seed": 1}}


def write_config(directory: Path, config: dict, name: str = "config.json") -> Path:
    path = directory / name
    path.write_text(json.dumps(config))
    return path


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def train_command(*args, processes: int = 1) -> list[str]:
    """`mtl-deploy train ARGS`, under torchrun with `processes` gloo processes if more than one."""
    if processes == 1:
        return [sys.executable, "-m", "mtl_deploy", "train", *map(str, args)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "mtl_deploy", "train", *map(str, args)]


def run_train(*args, processes: int = 1) -> subprocess.CompletedProcess:
    result = subprocess.run(train_command(*args, processes=processes), capture_output=True, text=True,
                            env=environment(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def weights(run_dir: Path) -> dict:
    return load_file(run_dir / "weights.safetensors")


def current_weights(run_dir: Path) -> dict:
    """The weights the loop ended with (the checkpoint holds the best-validation ones)."""
    return read_state(run_dir / "training-state.safetensors").modules["model"]


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
