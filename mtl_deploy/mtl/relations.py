"""Task relations of a trained multi-task model: which tasks help each other.

Two matrices over the tasks: the gradient affinity (cosine similarity of the per-task
gradients on the shared parameters, averaged over minibatches; tasks whose gradients point
the same way gain from sharing) and the target correlation (tasks whose labels move
together tend to share a representation). Each is turned into suggested task groups by
average-linkage clustering, and `analyze` writes both as heatmaps plus a JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from mtl_deploy import checkpoint
from mtl_deploy.atomic import atomic_directory, check_output
from mtl_deploy.config import DataConfig
from mtl_deploy.data.dataset import MultiTaskDataset
from mtl_deploy.data.loaders import dataset_from_config, load_csv, load_npz
from mtl_deploy.data.synthetic import synthetic_family
from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.errors import InputError
from mtl_deploy.plots import write_heatmap
from mtl_deploy.mtl.jacobian import shared_parameters, task_jacobian

RELATIONS_FILE, AFFINITY_PNG, CORRELATION_PNG = "relations.json", "affinity.png", "target_correlation.png"


@dataclass
class TaskRelations:
    tasks: list[str]
    affinity: list[list[float]]  # (T, T) mean cosine of per-task gradients on shared parameters
    target_correlation: list[list[float]]  # (T, T) largest |Pearson r| between the tasks' target columns
    groups_by_affinity: list[list[str]]
    groups_by_correlation: list[list[str]]
    batches: int
    threshold: float
    recommended: list[list[str]]  # the one grouping to use (paste into model.sharing.groups)
    reason: str  # why that one
    # the same cosine averaged over the training steps that computed per-task gradients
    # (aggregation or GradNorm runs), when the checkpoint recorded it
    affinity_during_training: list[list[float]] | None = None


def gradient_affinity(model: nn.Module, data: MultiTaskDataset, batch_size: int = 256, seed: int = 0) -> torch.Tensor:
    """(T, T) cosine similarity of the tasks' loss gradients on the shared parameters,
    averaged over the minibatches of one seeded pass over `data` (model in eval mode)."""
    was_training = model.training
    model.eval()
    params = shared_parameters(model)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    total, batches = torch.zeros(len(data.tasks), len(data.tasks)), 0
    for start in range(0, len(data), batch_size):
        rows = order[start:start + batch_size]
        outputs = model(data.x[rows])
        losses = torch.stack([t.loss(outputs[t.name], data.targets[t.name][rows]) for t in data.tasks])  # (T,)
        unit = torch.nn.functional.normalize(task_jacobian(losses, params), dim=1)  # (T, P) unit rows
        total += unit @ unit.T
        batches += 1
    model.train(was_training)
    return total / batches


def _target_columns(task: TaskSpec, target: torch.Tensor) -> torch.Tensor:
    """(N, k) real columns of one task's targets: values, a 0/1 column, or one-hot classes."""
    if task.kind == "regression":
        return target.reshape(len(target), -1).double()
    if task.kind == "binary":
        return target.reshape(-1, 1).double()
    return torch.nn.functional.one_hot(target, task.out_dim).double()


def target_correlation(data: MultiTaskDataset) -> torch.Tensor:
    """(T, T) largest absolute Pearson correlation between any target column of task a and
    any of task b (constant columns count as uncorrelated); 1 on the diagonal."""
    columns = [_target_columns(t, data.targets[t.name]) for t in data.tasks]
    stacked = torch.cat(columns, dim=1)  # (N, K) every task's columns side by side
    centred = stacked - stacked.mean(0)
    scale = centred.norm(dim=0)
    unit = centred / torch.where(scale > 1e-12, scale, torch.ones_like(scale))
    corr = (unit.T @ unit).abs()  # (K, K)
    owner = torch.cat([torch.full((c.shape[1],), i) for i, c in enumerate(columns)])
    result = torch.eye(len(columns), dtype=torch.float64)
    for a in range(len(columns)):
        for b in range(a + 1, len(columns)):
            result[a, b] = result[b, a] = corr[owner == a][:, owner == b].max()
    return result.float()


def suggest_groups(similarity: torch.Tensor, names: list[str], threshold: float) -> list[list[str]]:
    """Average-linkage clustering: merge the two groups with the highest mean pairwise
    similarity while that mean exceeds `threshold`; groups in order of their first task."""
    groups = [[i] for i in range(len(names))]
    while len(groups) > 1:
        score, a, b = max((similarity[ga][:, gb].mean().item(), a, b)
                          for a, ga in enumerate(groups) for b, gb in enumerate(groups) if a < b)
        if score <= threshold:
            break
        groups[a] = sorted(groups[a] + groups[b])
        del groups[b]
    return [[names[i] for i in group] for group in sorted(groups)]


def _dataset(data, tasks: list[TaskSpec]) -> MultiTaskDataset:
    """The rows to analyse, from a dataset, a data file, synthetic-family options or a DataConfig."""
    if isinstance(data, MultiTaskDataset):
        dataset = data
    elif isinstance(data, DataConfig):
        dataset = dataset_from_config(data)
    elif isinstance(data, dict):
        dataset = synthetic_family(**{"tasks": tuple(tasks), **data})
    elif Path(data).suffix in (".npz", ".csv"):
        dataset = (load_npz if Path(data).suffix == ".npz" else load_csv)(data, tasks)
    else:
        raise InputError(f"data {str(data)!r}: give an .npz or .csv file, synthetic options or a dataset")
    return dataset.select_tasks([t.name for t in tasks])


def task_relations(model: nn.Module, data: MultiTaskDataset, *, batch_size: int = 256, threshold: float = 0.2,
                   seed: int = 0) -> TaskRelations:
    """Both matrices and the groups they suggest, for `model` on `data`."""
    if tuple(data.input_shape) != tuple(model.input_shape):
        raise InputError(f"data rows have shape {list(data.input_shape)}; the model takes {list(model.input_shape)}")
    affinity, correlation = gradient_affinity(model, data, batch_size, seed), target_correlation(data)
    names = [t.name for t in data.tasks]
    by_affinity, by_correlation = suggest_groups(affinity, names, threshold), suggest_groups(correlation, names, threshold)
    recommended, reason = recommend(affinity, by_affinity, by_correlation)
    return TaskRelations(names, affinity.tolist(), correlation.tolist(), by_affinity, by_correlation,
                         -(-len(data) // batch_size), threshold, recommended, reason)


STRONG_AFFINITY = 0.5  # mean |cosine| between tasks' gradients above which they are more than noise


def recommend(affinity: torch.Tensor, by_affinity: list[list[str]],
              by_correlation: list[list[str]]) -> tuple[list[list[str]], str]:
    """One grouping and why. Where the two signals agree, that grouping. Otherwise the
    target correlation, which is measured on the data alone and is the steadier signal:
    the affinity is one snapshot of the gradients at trained weights, mostly noise once the
    model fits; only a strong affinity overrides it."""
    if by_affinity == by_correlation:
        return by_affinity, "gradient affinity and target correlation agree"
    count = len(affinity)
    strength = float((affinity.abs().sum() - affinity.diagonal().abs().sum()) / max(count * (count - 1), 1))
    if strength >= STRONG_AFFINITY:
        return by_affinity, (f"the signals disagree; the gradient affinity is strong (mean |cosine| {strength:.2f} "
                             f">= {STRONG_AFFINITY}) and measures what sharing does to training, so it decides")
    return by_correlation, (f"the signals disagree; the gradient affinity is weak (mean |cosine| {strength:.2f} "
                            f"< {STRONG_AFFINITY}), mostly noise at trained weights, so the target correlation, "
                            "measured on the data alone, decides")


def analyze(checkpoint_path: str | Path, data, out_dir: str | Path, *, batch_size: int = 256,
            threshold: float = 0.2, seed: int = 0) -> TaskRelations:
    """Task relations of the checkpoint at `checkpoint_path` on `data` (an .npz/.csv path
    holding the model's task columns, a dict of `synthetic_family` options, a DataConfig or
    a MultiTaskDataset), written to `out_dir` as affinity.png, target_correlation.png and
    relations.json, all-or-nothing. The affinity is measured at the checkpoint's weights;
    on data with much label noise a converged model's gradients are mostly noise, so the
    affinity shrinks towards 0 and the target correlation is the steadier signal."""
    inputs = (checkpoint_path, data if isinstance(data, (str, Path)) else None)
    check_output(out_dir, "relations", inputs)
    if not (math.isfinite(threshold) and -1.0 <= threshold <= 1.0):
        raise InputError(f"threshold must be a number in [-1, 1] (a mean cosine or correlation), got {threshold}")
    if batch_size < 2:
        raise InputError(f"batch_size must be >= 2, got {batch_size}")
    loaded = checkpoint.read(checkpoint_path)
    model = loaded.model
    relations = task_relations(model, _dataset(data, model.tasks), batch_size=batch_size, threshold=threshold,
                               seed=seed)
    relations.affinity_during_training = loaded.manifest.get("info", {}).get("task_affinity")
    with atomic_directory(out_dir, "relations", inputs) as staging:
        write_heatmap(staging / AFFINITY_PNG, relations.affinity, relations.tasks,
                      "Task affinity: cosine of per-task gradients on shared parameters", (-1.0, 1.0))
        write_heatmap(staging / CORRELATION_PNG, relations.target_correlation, relations.tasks,
                      "Target correlation: largest |Pearson r|", (0.0, 1.0))
        (staging / RELATIONS_FILE).write_text(json.dumps({"format": "mtl_deploy.relations", **asdict(relations)}, indent=2) + "\n")
    return relations
