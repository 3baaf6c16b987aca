"""Δm of every sharing scheme under equal, uncertainty, GradNorm, PCGrad and CAGrad training,
on the synthetic family with related and with conflicting tasks: 3 seeds, mean ± std, as a
markdown table. Δm (LibMTL's convention) is measured on 2000 held-out rows against one
single-task model per task trained with the same settings.

Run: PYTHONPATH=. python benchmarks/mtl_table.py  (about 5 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mtl_deploy.config import RunConfig
from mtl_deploy.data.synthetic import synthetic_family
from mtl_deploy.mtl.fit import fit
from mtl_deploy.mtl.joint import evaluate
from mtl_deploy.mtl.metrics import delta_m_of_metrics

FAMILIES = {"related": 1.0, "conflicting": 0.0}  # relatedness: one shared code vs one code per task
SCHEMES = {
    "hard": {"scheme": "hard"},
    "soft (L2)": {"scheme": "soft", "coupling": "l2", "strength": 1e-3},
    "hierarchical": {"scheme": "hierarchical", "groups": [["price", "demand", "risk"], ["segment", "churn"]],
                     "group_hidden": [16]},
    "cross-stitch": {"scheme": "cross_stitch"},
    "MMoE": {"scheme": "mmoe", "experts": 4},
}
METHODS = {  # column -> (train.weighting, train.aggregation)
    "equal": ("equal", "none"), "uncertainty": ("uncertainty", "none"), "GradNorm": ("gradnorm", "none"),
    "PCGrad": ("equal", "pcgrad"), "CAGrad": ("equal", "cagrad"),
}
HOLDOUT_ROWS = 2000


def run_config(seed: int, epochs: int, sharing: dict, weighting: str, aggregation: str) -> RunConfig:
    config = RunConfig()
    config.model.trunk = {"type": "mlp", "hidden": [32, 32], "activation": "relu"}
    config.model.sharing = sharing
    config.train.epochs, config.train.patience, config.train.seed = epochs, 15, seed
    config.train.weighting, config.train.aggregation = weighting, aggregation
    return config


def family_deltas(relatedness: float, seed: int, epochs: int) -> dict[tuple[str, str], float]:
    """(scheme, method) -> Δm for one family and seed."""
    options = {"relatedness": relatedness, "seed": seed}
    data = synthetic_family(n_rows=200, **options)
    holdout = synthetic_family(n_rows=HOLDOUT_ROWS, split="holdout", **options)
    single = {}
    for task in data.tasks:
        fitted = fit(data.select_tasks([task.name]), run_config(seed, epochs, {"scheme": "hard"}, "equal", "none"),
                             progress=False)
        single[task.name] = evaluate(fitted.model, holdout.select_tasks([task.name]))[1][task.name]
    deltas = {}
    for scheme, sharing in SCHEMES.items():
        for method, (weighting, aggregation) in METHODS.items():
            fitted = fit(data, run_config(seed, epochs, sharing, weighting, aggregation), progress=False)
            deltas[scheme, method] = delta_m_of_metrics(single, evaluate(fitted.model, holdout)[1])
    return deltas


def markdown(results: dict[str, list[dict]]) -> str:
    lines = []
    for family, runs in results.items():
        lines += [f"**{family} tasks** (Δm in %, mean ± std over {len(runs)} seeds; higher is better)", "",
                  "| scheme | " + " | ".join(METHODS) + " |", "|---|" + "---:|" * len(METHODS)]
        for scheme in SCHEMES:
            cells = []
            for method in METHODS:
                values = [100 * run[scheme, method] for run in runs]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.mean(values):+.1f} ± {spread:.1f}")
            lines.append(f"| {scheme} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: threads only add contention
    start = time.perf_counter()
    results = {family: [family_deltas(r, seed, args.epochs) for seed in range(args.seeds)]
               for family, r in FAMILIES.items()}
    print(markdown(results))
    print(f"({args.seeds} seeds, up to {args.epochs} epochs, {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
