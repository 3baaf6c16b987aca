"""Meta-training throughput (tasks per second) and multi-task throughput (rows per second)
with 1 and 2 processes: `mtl-deploy train` alone, then under torchrun with 2 gloo
processes, the same global batches. Each configuration runs a few times; the table gives
the median of the rates the runs log (outer steps only: validation is not counted).

On a 2-core machine the fair comparison is 1 process with 2 threads against 2 processes
with 1 thread each; 1 process with 1 thread is shown as the per-core baseline.

Run: PYTHONPATH=. python benchmarks/distributed_throughput.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from mtl_deploy.config import resolve_config

CASES = [  # (preset, how long, the logged rate)
    ("sinusoid-maml", ["--iterations", "400"], "tasks_per_second"),
    ("digits-maml", ["--iterations", "24"], "tasks_per_second"),
    ("digits-protonet", ["--iterations", "60"], "tasks_per_second"),
    ("synthetic-related", ["--epochs", "15"], "rows_per_second"),
]


def label(preset: str) -> str:
    """The preset with its batch: tasks per meta-batch, or rows per minibatch."""
    config = resolve_config(preset=preset)
    if config.meta is not None:
        return f"{preset} ({config.model.trunk.get('type', 'mlp')}), meta-batch {config.meta.meta_batch}"
    return f"{preset} (multi-task), batch {config.train.batch_size}"
SETUPS = [("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1)]


def rate(arguments: list[str], key: str, processes: int, threads: int) -> float:
    """The median rate one run logs."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "run"
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                    if processes > 1 else [sys.executable])
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
        env["OMP_NUM_THREADS"] = str(threads)
        subprocess.run([*launcher, "-m", "mtl_deploy", "train", *arguments, "--out", str(out)], check=True,
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert all(line["processes"] == processes for line in lines)
        return statistics.median(line[key] for line in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"\n### Training throughput, 1 vs 2 processes ({os.cpu_count()} cores; median of {args.repeats} runs)\n")
    print("| run | rate | " + " | ".join(name for name, _, _ in SETUPS) + " | 2 processes vs 1 process x 2 threads |")
    print("|---|---|" + "---|" * len(SETUPS) + "---|")
    for preset, arguments, key in CASES:
        arguments = ["--preset", preset, *arguments]
        rates = [statistics.median(rate(arguments, key, p, t) for _ in range(args.repeats)) for _, p, t in SETUPS]
        unit = key.replace("_per_second", "/s")
        cells = " | ".join(f"{r:,.0f}" for r in rates)
        print(f"| {label(preset)} | {unit} | {cells} | {rates[2] / rates[1]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
