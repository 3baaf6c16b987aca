"""From a run configuration to a trained model: load the data, split it, fix the
normalisation on the training split, build the model, train it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mtl_deploy.checkpoint import write_checkpoint
from torch import nn

from mtl_deploy.config import RunConfig, TrainConfig
from mtl_deploy.data.dataset import MultiTaskDataset, UserDataset, normalization_stats
from mtl_deploy.errors import InputError
from mtl_deploy.data.loaders import dataset_from_config
from mtl_deploy.runs.distributed import Group
from mtl_deploy.models.multitask import MultiTaskBase
from mtl_deploy.models.sharing import build_multitask
from mtl_deploy.mtl.joint import TrainResult, train_multitask
from mtl_deploy.runs.directory import RunDirectory
from mtl_deploy.runs.state import TrainingState

SAMPLE_ROWS = 256  # validation rows kept in the checkpoint for export verification


@dataclass
class Fitted:
    model: MultiTaskBase
    result: TrainResult
    train: MultiTaskDataset
    val: MultiTaskDataset


def fit(data: MultiTaskDataset, config: RunConfig, progress: bool = True, run: RunDirectory | None = None,
                state: TrainingState | None = None, group: Group = Group()) -> Fitted:
    """Train a multi-task model on every task of `data` as `config` says (logging to `run`,
    continuing from `state`, as one rank of `group`: see `train_multitask`)."""
    train, val = data.split(config.data.val_fraction, config.train.seed)
    torch.manual_seed(config.train.seed)  # the initial weights are part of a reproducible run
    model = build_multitask(data.input_shape, data.tasks, config.model.trunk, config.model.sharing)
    model.set_normalization(*normalization_stats(train.x))
    result = train_multitask(model, train, val, config.train, progress, run=run, state=state, group=group)
    return Fitted(model, result, train, val)


def train(model: nn.Module, data, *, config: TrainConfig | None = None, val=None, val_fraction: float = 0.2,
          progress: bool = True) -> TrainResult:
    """Train a model you built (`mtl_deploy.wrap`, or a built-in one) in place on `data`:
    a `MultiTaskDataset`, or any map-style `torch.utils.data.Dataset` whose items are
    `(inputs, {task name: target})`, read lazily one minibatch at a time. `val` (same kinds)
    defaults to a seeded `val_fraction` of `data`. Every weighting and aggregation of
    `config` applies; `config.backbone_lr` trains the trunk at its own rate."""
    config = config or TrainConfig()
    tasks = getattr(model, "tasks", None)
    if not isinstance(model, nn.Module) or not tasks:
        raise InputError("train takes an mtl_deploy multi-task model (see mtl_deploy.wrap)")
    as_data = lambda d: d if isinstance(d, (MultiTaskDataset, UserDataset)) else UserDataset(d, tasks)  # noqa: E731
    data = as_data(data)
    train_rows, val_rows = data.split(val_fraction, config.seed) if val is None else (data, as_data(val))
    return train_multitask(model, train_rows, val_rows, config, progress)


def train_run(config: RunConfig, out_dir: str | Path, progress: bool = True, resume: bool = False,
          group: Group = Group()) -> Fitted:
    """Train as `config` says in the run directory `out_dir` (see `records.RunDirectory`:
    an interrupted run leaves any previous checkpoint there untouched, and `resume`
    continues it)."""
    data = dataset_from_config(config.data)
    with RunDirectory(out_dir, writer=group.is_main) as run:
        fitted = fit(data, config, progress, run, run.open(config.to_dict(), resume), group)
        result = fitted.result
        run.finish(lambda directory: write_checkpoint(
            fitted.model, directory, sample_inputs=fitted.val.x[:SAMPLE_ROWS], config=config.to_dict(),
            val_metrics=result.val_metrics, val_loss=result.val_loss, best_epoch=result.best_epoch,
            epochs_run=result.epochs_run, rows={"train": len(fitted.train), "val": len(fitted.val)},
            processes=group.world_size,
            **({"task_affinity": result.task_affinity} if result.task_affinity is not None else {})))
    return fitted
