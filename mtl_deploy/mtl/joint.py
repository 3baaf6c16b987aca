"""Joint multi-task training: minibatch steps on the weighted task losses (optionally with
their per-task gradients aggregated, see `step`), validation metrics per task each epoch,
early stopping that restores the best epoch's weights; on the CPU or a GPU, data-parallel
under torchrun, and resumable mid-epoch from a saved state."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mtl_deploy.config import TrainConfig
from mtl_deploy.data.dataset import MultiTaskDataset, UserDataset
from mtl_deploy.runs.distributed import Group
from mtl_deploy.errors import InputError
from mtl_deploy.mtl.metrics import task_metrics
from mtl_deploy.mtl.step import optimisation_step
from mtl_deploy.mtl.weighting import make_weighting
from mtl_deploy.runs.device import CPU, module_device, to_device, training_device
from mtl_deploy.runs.directory import RunDirectory
from mtl_deploy.runs.state import TrainingState


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
def evaluate(model: nn.Module, data: MultiTaskDataset | UserDataset, batch_size: int = 1024) -> tuple[float, dict]:
    """Summed validation loss and per-task metrics of `model` on `data`, run on the model's
    device and reckoned on the CPU."""
    was_training = model.training
    model.eval()
    device = module_device(model)
    chunks, target_chunks = [], []
    for start in range(0, len(data), batch_size):
        inputs, targets = data.batch(torch.arange(start, min(start + batch_size, len(data))))
        chunks.append(to_device(model(to_device(inputs, device)), CPU))
        target_chunks.append(targets)
    model.train(was_training)
    outputs = {t.name: torch.cat([c[t.name] for c in chunks]) for t in data.tasks}
    targets = {t.name: torch.cat([c[t.name] for c in target_chunks]) for t in data.tasks}
    loss = sum(float(t.loss(outputs[t.name], targets[t.name])) for t in data.tasks)
    return loss, {t.name: task_metrics(t, outputs[t.name], targets[t.name]) for t in data.tasks}


def parameter_groups(model: nn.Module, lr: float, backbone_lr: float | None) -> list[dict]:
    """The trainable parameters: the trunk at `backbone_lr` when given (fine-tuning a
    pretrained backbone slower than its new heads), everything else at `lr`. Frozen
    parameters are left out."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if backbone_lr is None:
        return [{"params": [p for _, p in trainable], "lr": lr}]
    trunk = [p for name, p in trainable if name.startswith("trunk.")]
    if not trunk:
        raise InputError("train.backbone_lr is set, but the model has no trainable trunk parameters")
    return [{"params": [p for name, p in trainable if not name.startswith("trunk.")], "lr": lr},
            {"params": trunk, "lr": backbone_lr}]


def train_multitask(model: nn.Module, train: MultiTaskDataset | UserDataset, val: MultiTaskDataset | UserDataset,
                    config: TrainConfig, progress: bool = True, task_losses: TaskLosses | None = None,
                    run: RunDirectory | None = None, state: TrainingState | None = None,
                    group: Group = Group()) -> TrainResult:
    """Train `model` in place on every task of `train`; on return it holds the weights of
    the epoch with the lowest summed validation loss. `task_losses(outputs, rows)` replaces
    each task's loss against its labels (distillation trains on teachers' outputs). With
    `run`, log each epoch to it and save a resumable state every `checkpoint_every` steps;
    `state` (one saved before) continues exactly. Under torchrun each rank takes its share
    of every minibatch. The model trains on `config.device` and goes back to its own device
    at the end; the loop's counters and tensors stay on the CPU."""
    if config.checkpoint_every < 1:
        raise InputError("train.checkpoint_every must be >= 1")
    device, home = training_device(config.device), module_device(model)
    torch.manual_seed(config.seed)
    shuffle = torch.Generator().manual_seed(config.seed)
    n_tasks = len(train.tasks)
    weighting = make_weighting(config.weighting, [t.name for t in train.tasks], config.weighting_options)
    model.to(device)  # before the optimiser and the saved state take its parameters
    weighting.to(device)
    optimizer = torch.optim.Adam([*parameter_groups(model, config.lr, config.backbone_lr),
                                  {"params": list(weighting.parameters()), "lr": config.lr}],
                                 weight_decay=config.weight_decay)
    modules = {"model": model, "weighting": weighting}
    loop = {"step": 0, "epoch": 1, "position": 0, "total": 0.0, "batches": 0, "best_loss": float("inf"),
            "best_epoch": 0, "stale": 0, "stopped": False, "history": [], "affinity_steps": 0}
    tensors = {"task_totals": torch.zeros(n_tasks), "affinity": torch.zeros(n_tasks, n_tasks),
               "order": torch.randperm(len(train), generator=shuffle)}
    best_state = None
    if state is not None:
        state.restore(modules, optimizer)
        loop, tensors, best_state = state.info, dict(state.tensors), state.best
        shuffle.set_state(tensors.pop("shuffle"))

    def save_state():
        run.save_state(modules, optimizer, loop, {**tensors, "shuffle": shuffle.get_state()}, best=best_state)

    bar = tqdm(total=config.epochs, initial=loop["epoch"] - 1, desc="train", unit="epoch",
               disable=not (progress and group.is_main) or None, leave=False)
    while loop["epoch"] <= config.epochs and not loop["stopped"]:
        model.train()
        started, rows_seen = time.perf_counter(), 0
        for start in range(loop["position"], len(train), config.batch_size):
            rows = tensors["order"][start:start + config.batch_size]
            share = group.share(len(rows))
            mine = rows[share.start:share.stop]
            inputs, targets = to_device(train.batch(mine), device)
            outputs = model(inputs)
            losses = (task_losses(outputs, mine) if task_losses is not None else
                      {t.name: t.loss(outputs[t.name], targets[t.name]) for t in train.tasks})
            step = optimisation_step(model, losses, weighting, optimizer, config.aggregation,
                                     config.aggregation_options, group, len(mine) / len(rows))
            group.broadcast_buffers(model)
            if step.per_task is not None:
                unit = F.normalize(step.per_task.detach(), dim=1)  # (T, P_shared) unit gradient rows
                tensors["affinity"] += (unit @ unit.T).cpu()
                loop["affinity_steps"] += 1
            loop["total"] += step.total
            loop["batches"] += 1
            tensors["task_totals"] += step.task_losses.cpu()
            loop["position"], loop["step"] = start + config.batch_size, loop["step"] + 1
            rows_seen += len(rows)
            if run is not None and loop["step"] % config.checkpoint_every == 0:
                save_state()
        seconds = time.perf_counter() - started
        weighting.epoch_end(tensors["task_totals"].to(device) / loop["batches"])
        val_loss, val_metrics = evaluate(model, val)
        epoch = loop["epoch"]
        loop["history"].append({"epoch": epoch, "train_loss": loop["total"] / loop["batches"], "val_loss": val_loss})
        if run is not None:
            run.log({"step": loop["step"], "epoch": epoch, "train_loss": loop["total"] / loop["batches"],
                     "task_losses": dict(zip([t.name for t in train.tasks],
                                             (tensors["task_totals"] / loop["batches"]).tolist())),
                     "val_loss": val_loss, "val_metrics": val_metrics,
                     "rows_per_second": rows_seen / max(seconds, 1e-9), "processes": group.world_size})
        bar.update(1)
        bar.set_postfix(val_loss=f"{val_loss:.4f}")
        if val_loss < loop["best_loss"]:
            loop["best_loss"], loop["best_epoch"], loop["stale"] = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            loop["stale"] += 1
            loop["stopped"] = loop["stale"] >= config.patience
        loop.update(epoch=epoch + 1, position=0, total=0.0, batches=0)
        tensors["task_totals"] = torch.zeros(n_tasks)
        tensors["order"] = torch.randperm(len(train), generator=shuffle)
    bar.close()
    if run is not None:
        save_state()
    if best_state is not None:
        model.load_state_dict(best_state)
    val_loss, val_metrics = evaluate(model, val)
    model.to(home)
    affinity = tensors["affinity"] / loop["affinity_steps"] if loop["affinity_steps"] else None
    return TrainResult(loop["best_epoch"], loop["epoch"] - 1, val_loss, val_metrics, loop["history"],
                       affinity.tolist() if affinity is not None else None)
