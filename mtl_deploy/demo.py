"""The whole flow on built-in data, end to end: train a multi-task model on related and on
unrelated synthetic tasks next to single-task baselines, save the related one, export it to
ONNX with proved parity, and time ONNX Runtime against PyTorch eager."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from mtl_deploy.checkpoint import load
from mtl_deploy.config import resolve_config
from mtl_deploy.data.synthetic import synthetic_family
from mtl_deploy.exporters.exporter import export
from mtl_deploy.exporters.onnx_export import MODEL_FILE
from mtl_deploy.exporters.report import ExportReport
from mtl_deploy.exporters.latency import serving_latency
from mtl_deploy.errors import InputError
from mtl_deploy.mtl.fit import fit, train_run
from mtl_deploy.mtl.metrics import PRIMARY, is_better
from mtl_deploy.mtl.joint import evaluate
from mtl_deploy.tables import latency_table, parity_table, table

HOLDOUT_ROWS = 2000


@dataclass
class Comparison:
    family: str
    task: str
    kind: str
    metric: str
    multitask: float
    single_task: float
    multitask_better: bool


@dataclass
class DemoSummary:
    comparisons: list[Comparison]
    export: ExportReport
    latency: list[dict]
    checkpoint_dir: Path
    export_dir: Path
    seconds: float


def compare_with_single_task(preset: str, progress: bool, seed: int = 0) -> tuple[list[Comparison], object]:
    """Held-out metrics of one multi-task model vs. one single-task model per task, same
    rows, same architecture and training settings; `seed` draws the tasks and the weights."""
    config = resolve_config(preset=preset, overrides={"train.seed": seed})
    config.data.synthetic = {**config.data.synthetic, "seed": seed}
    data = synthetic_family(**config.data.synthetic)
    holdout = synthetic_family(**{**config.data.synthetic, "n_rows": HOLDOUT_ROWS, "split": "holdout"})
    joint = fit(data, config, progress)
    _, joint_metrics = evaluate(joint.model, holdout)
    rows = []
    for task in data.tasks:
        single = fit(data.select_tasks([task.name]), config, progress)
        _, single_metrics = evaluate(single.model, holdout.select_tasks([task.name]))
        metric = PRIMARY[task.kind][0]
        rows.append(Comparison(preset, task.name, task.kind, metric, joint_metrics[task.name][metric],
                               single_metrics[task.name][metric],
                               is_better(task, joint_metrics[task.name], single_metrics[task.name])))
    return rows, config


def run_demo(out_dir: str | Path = "demo-out", progress: bool = True, seed: int = 0) -> DemoSummary:
    start = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise InputError(f"--out {out_dir} is a file or a symbolic link, not a directory; give a new directory")
    comparisons, _ = compare_with_single_task("synthetic-unrelated", progress, seed)
    related, config = compare_with_single_task("synthetic-related", progress, seed)
    checkpoint_dir, export_dir = out_dir / "checkpoint", out_dir / "export"
    train_run(config, checkpoint_dir, progress)
    report = export(checkpoint_dir, export_dir)
    latency = serving_latency(load(checkpoint_dir), export_dir / MODEL_FILE)
    return DemoSummary(related + comparisons, report, latency, checkpoint_dir, export_dir,
                       time.perf_counter() - start)


def format_summary(summary: DemoSummary) -> str:
    rows = [[c.family.removeprefix("synthetic-"), c.task, c.kind, c.metric, c.multitask, c.single_task,
             c.multitask_better] for c in summary.comparisons]
    wins = {}
    for c in summary.comparisons:
        wins.setdefault(c.family, []).append(c.multitask_better)
    verdict = "; ".join(f"{family.removeprefix('synthetic-')} tasks: multi-task better on {sum(w)}/{len(w)}"
                        for family, w in wins.items())
    return "\n\n".join([
        f"Held-out metrics ({HOLDOUT_ROWS} fresh rows; mse lower is better, accuracy higher is better)\n"
        + table(["tasks", "task", "kind", "metric", "multi-task", "single-task", "multi-task better"], rows)
        + f"\n{verdict}",
        parity_table(summary.export.parity),
        "Serving latency, median, 1 thread\n" + latency_table(summary.latency),
        f"checkpoint: {summary.checkpoint_dir}\nexport:     {summary.export_dir}\n"
        f"done in {summary.seconds:.1f} s",
    ])
