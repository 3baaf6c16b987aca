"""Meta-train MAML with its meta-batches split across processes, stop, and resume to train
longer; the run directory keeps the config, the metrics log, curves and the checkpoint.
Launch on one machine with 2 processes (or run plainly for one process):

    torchrun --standalone --nproc_per_node=2 examples/distributed_training.py [OUT_DIR] [ITERATIONS]
"""

import json
import os
import sys
from pathlib import Path

import mtl_deploy
from mtl_deploy.config import resolve_config

out = Path(sys.argv[1] if len(sys.argv) > 1 else "distributed-out") / "maml"
iterations = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
config = resolve_config(preset="sinusoid-maml", overrides={"meta.iterations": iterations // 2,
                                                           "meta.val_every": 100, "meta.checkpoint_every": 100})
mtl_deploy.train(config, out, progress=False)  # every process runs this; rank 0 writes
config.meta.iterations = iterations  # the same run, continued from its saved state
fitted = mtl_deploy.train(config, out, progress=False, resume=True)

if os.environ.get("RANK", "0") == "0":  # torchrun numbers the processes; rank 0 reports
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    print(f"step {last['step']}: validation loss {last['val_loss']:.3f}, {last['tasks_per_second']:.0f} tasks/s "
          f"on {last['processes']} process(es); curves in {out / 'curves.png'}")
