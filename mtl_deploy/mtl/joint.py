"""Joint multi-task training: minibatch SGD on the weighted sum of task losses, validation
metrics per task each epoch, early stopping that restores the best epoch's weights."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from mtl_deploy.config import TrainConfig
from mtl_deploy.data.dataset import MultiTaskDataset
from mtl_deploy.mtl.metrics import task_metrics
from mtl_deploy.mtl.weighting import make_weighting


@dataclass
class TrainResult:
    best_epoch: int
    epochs_run: int
    val_loss: float
    val_metrics: dict[str, dict[str, float]]
    history: list[dict] = field(default_factory=list)  # per epoch: train and validation loss


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
                    config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train `model` in place on every task of `train`; on return it holds the weights of
    the epoch with the lowest summed validation loss."""
    torch.manual_seed(config.seed)
    shuffle = torch.Generator().manual_seed(config.seed)
    weighting = make_weighting(config.weighting)
    optimizer = torch.optim.Adam([*model.parameters(), *weighting.parameters()], lr=config.lr,
                                 weight_decay=config.weight_decay)
    best_loss, best_state, best_epoch, stale, history = float("inf"), None, 0, 0, []
    bar = tqdm(range(1, config.epochs + 1), desc="train", unit="epoch", disable=not progress or None, leave=False)
    epoch = 0
    for epoch in bar:
        model.train()
        order = torch.randperm(len(train), generator=shuffle)
        total, batches = 0.0, 0
        for start in range(0, len(train), config.batch_size):
            rows = order[start:start + config.batch_size]
            outputs = model(train.x[rows])
            losses = {t.name: t.loss(outputs[t.name], train.targets[t.name][rows]) for t in train.tasks}
            loss = weighting(losses)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, batches = total + float(loss.detach()), batches + 1
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
    return TrainResult(best_epoch, epoch, val_loss, val_metrics, history)
