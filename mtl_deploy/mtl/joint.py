"""Joint multi-task training: minibatch steps on the weighted task losses (optionally with
their per-task gradients aggregated, see `step`), validation metrics per task each epoch,
early stopping that restores the best epoch's weights."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mtl_deploy.config import TrainConfig
from mtl_deploy.data.dataset import MultiTaskDataset
from mtl_deploy.mtl.metrics import task_metrics
from mtl_deploy.mtl.step import optimisation_step
from mtl_deploy.mtl.weighting import make_weighting


TaskLosses = Callable[[dict[str, torch.Tensor], torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class TrainResult:
    best_epoch: int
    epochs_run: int
    val_loss: float
    val_metrics: dict[str, dict[str, float]]
    history: list[dict] = field(default_factory=list)  # per epoch: train and validation loss
    # (T, T) cosine of per-task gradients on shared parameters, averaged over the steps that
    # computed them (aggregation or GradNorm); None when every step was a plain backward
    task_affinity: list[list[float]] | None = None


@torch.no_grad()
def evaluate(model: nn.Module, data: MultiTaskDataset, batch_size: int = 1024) -> tuple[float, dict]:
    """Summed validation loss and per-task metrics of `model` on `data`."""
    was_training = model.training
    model.eval()
    chunks = [model(data.x[i:i + batch_size]) for i in range(0, len(data), batch_size)]
    model.train(was_training)
    outputs = {t.name: torch.cat([c[t.name] for c in chunks]) for t in data.tasks}
    loss = sum(float(t.loss(outputs[t.name], data.targets[t.name])) for t in data.tasks)
    return loss, {t.name: task_metrics(t, outputs[t.name], data.targets[t.name]) for t in data.tasks}


def train_multitask(model: nn.Module, train: MultiTaskDataset, val: MultiTaskDataset,
                    config: TrainConfig, progress: bool = True, task_losses: TaskLosses | None = None) -> TrainResult:
    """Train `model` in place on every task of `train`; on return it holds the weights of
    the epoch with the lowest summed validation loss. `task_losses(outputs, rows)` replaces
    each task's loss against its labels (distillation trains on teachers' outputs)."""
    torch.manual_seed(config.seed)
    shuffle = torch.Generator().manual_seed(config.seed)
    weighting = make_weighting(config.weighting, [t.name for t in train.tasks], config.weighting_options)
    optimizer = torch.optim.Adam([*model.parameters(), *weighting.parameters()], lr=config.lr,
                                 weight_decay=config.weight_decay)
    best_loss, best_state, best_epoch, stale, history = float("inf"), None, 0, 0, []
    affinity, affinity_steps = torch.zeros(len(train.tasks), len(train.tasks)), 0
    bar = tqdm(range(1, config.epochs + 1), desc="train", unit="epoch", disable=not progress or None, leave=False)
    epoch = 0
    for epoch in bar:
        model.train()
        order = torch.randperm(len(train), generator=shuffle)
        total, batches, task_totals = 0.0, 0, torch.zeros(len(train.tasks))
        for start in range(0, len(train), config.batch_size):
            rows = order[start:start + config.batch_size]
            outputs = model(train.x[rows])
            losses = (task_losses(outputs, rows) if task_losses is not None else
                      {t.name: t.loss(outputs[t.name], train.targets[t.name][rows]) for t in train.tasks})
            loss, per_task = optimisation_step(model, losses, weighting, optimizer, config.aggregation,
                                               config.aggregation_options)
            if per_task is not None:
                unit = F.normalize(per_task.detach(), dim=1)  # (T, P_shared) unit gradient rows
                affinity, affinity_steps = affinity + unit @ unit.T, affinity_steps + 1
            total, batches = total + loss, batches + 1
            task_totals += torch.stack([v.detach() for v in losses.values()])  # (T,)
        weighting.epoch_end(task_totals / batches)
        val_loss, _ = evaluate(model, val)
        history.append({"epoch": epoch, "train_loss": total / batches, "val_loss": val_loss})
        bar.set_postfix(val_loss=f"{val_loss:.4f}")
        if val_loss < best_loss:
            best_loss, best_state, best_epoch, stale = val_loss, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    val_loss, val_metrics = evaluate(model, val)
    return TrainResult(best_epoch, epoch, val_loss, val_metrics, history,
                       (affinity / affinity_steps).tolist() if affinity_steps else None)
