"""Meta-training: sample a meta-batch of tasks, take one outer optimiser step on the
learner's meta-gradient, validate on held-out tasks now and then, keep the best weights,
and write a checkpoint whose manifest carries the algorithm and its hyper-parameters.
Runs on the CPU or a GPU (episodes are drawn on the CPU and moved there), data-parallel
under torchrun, and resumes from its saved state."""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mtl_deploy import ops
from mtl_deploy.checkpoint import write_checkpoint
from mtl_deploy.config import MetaConfig, RunConfig
from mtl_deploy.data.dataset import normalization_stats
from mtl_deploy.data.episodes import Episodes
from mtl_deploy.data.fewshot import ClassSampler, FewShotFamily, fewshot_family
from mtl_deploy.runs.distributed import Group, step_generator
from mtl_deploy.errors import InputError
from mtl_deploy.meta.learners import METRIC, make_learner
from mtl_deploy.models.fewshot import FewShotModel
from mtl_deploy.runs.device import CPU, module_device, training_device
from mtl_deploy.runs.directory import RunDirectory
from mtl_deploy.runs.state import TrainingState


@dataclass
class MetaFitted:
    model: FewShotModel
    family: FewShotFamily
    best_iteration: int
    val_loss: float
    seconds: float
    history: list[dict]


def family_of(meta: MetaConfig) -> FewShotFamily:
    """The config's family; its meta-training episodes have `meta.train_ways` ways when set
    (metric learners only: a linear head has exactly `meta.ways` outputs)."""
    family = fewshot_family(meta.family, meta.ways, meta.shots, meta.queries, meta.path, tuple(meta.class_split),
                            meta.image_size, meta.seed, meta.translate, meta.rotations)
    if meta.train_ways is not None and meta.train_ways != meta.ways:
        train = family.samplers["train"]
        if meta.algorithm not in METRIC or not isinstance(train, ClassSampler):
            raise InputError(f"meta.train_ways applies to protonet and matching on class families, not "
                             f"{meta.algorithm} on {meta.family}; remove it or set it to meta.ways")
        if meta.train_ways > len(train.episodes.classes):
            raise InputError(f"meta.train_ways {meta.train_ways} exceeds the {len(train.episodes.classes)} "
                             "meta-training classes; use fewer ways or meta.rotations")
        family.samplers["train"] = dataclasses.replace(train, ways=meta.train_ways)
    return family


def build_fewshot_model(config: RunConfig, family: FewShotFamily) -> FewShotModel:
    learner = make_learner(config.meta)
    meta = config.meta
    whole_network = meta.algorithm in ("maml", "fomaml", "metasgd", "reptile")
    trunk = config.model.trunk
    if whole_network and trunk.get("type", "mlp") == "conv" and trunk.get("norm", "batch") != "none":
        raise InputError(f"{meta.algorithm} adapts the whole network, and a conv trunk's batch norm cannot be "
                         "adapted per task; set model.trunk.norm to \"none\" (or use anil, protonet or matching)")
    if meta.learned_scale and meta.algorithm not in METRIC:
        raise InputError(f"meta.learned_scale applies to protonet and matching, not {meta.algorithm}; remove it")
    adaptation = {"algorithm": meta.algorithm, "inner_lr": meta.inner_lr, "adapt_steps": meta.adapt_steps,
                  "head_lr": meta.head_lr, "proto_init": meta.proto_init}
    model = FewShotModel(family.input_shape, family.task, config.model.trunk, learner.head,
                         learned_lr=meta.algorithm == "metasgd", adaptation=adaptation,
                         learned_scale=meta.learned_scale)
    if family.train_rows is not None:
        model.set_normalization(*normalization_stats(family.train_rows))
    if model.inner_lrs is not None:
        with torch.no_grad():
            for rate in model.inner_lrs:
                rate.fill_(meta.inner_lr)
    return model


def validation_loss(model, learner, family: FewShotFamily, tasks: int, seed: int) -> float:
    episodes = family.samplers["val"].sample(tasks, torch.Generator().manual_seed(seed)).to(module_device(model))
    model.eval()
    with torch.no_grad():
        loss = float(learner.query_loss(model, episodes))
    model.train()
    return loss


def sample_share(sampler, meta: MetaConfig, step: int, group: Group) -> tuple[Episodes, float]:
    """This rank's tasks of meta-batch `step` (drawn from a generator seeded by seed and
    step), and their share of the meta-batch."""
    share = group.share(meta.meta_batch)
    episodes = sampler.sample(meta.meta_batch, step_generator(meta.seed, step)).select(share)
    return episodes, len(share) / meta.meta_batch


def meta_train(config: RunConfig, progress: bool = True, run: RunDirectory | None = None,
               state: TrainingState | None = None, group: Group = Group()) -> MetaFitted:
    """Meta-train as `config` says. With `run`, log to it and save a resumable state every
    `meta.checkpoint_every` steps; `state` (one saved before) continues exactly. Under
    torchrun each of the `group`'s ranks takes its share of every meta-batch. The model
    trains on `meta.device` and is returned on the CPU."""
    meta = config.meta
    if meta.iterations < 1 or meta.meta_batch < 1 or meta.val_every < 1 or meta.checkpoint_every < 1:
        raise InputError("meta.iterations, meta.meta_batch, meta.val_every and meta.checkpoint_every must be >= 1")
    if meta.meta_batch < group.world_size:
        raise InputError(f"a meta-batch of {meta.meta_batch} tasks cannot be split across {group.world_size} "
                         "processes; use a larger meta.meta_batch or fewer processes")
    device = training_device(meta.device)
    family = family_of(meta)
    learner = make_learner(meta)
    torch.manual_seed(meta.seed)
    model = build_fewshot_model(config, family)
    return _meta_loop(model, family, learner, meta, device, progress, run, state, group)


def _meta_loop(model: FewShotModel, family: FewShotFamily, learner, meta: MetaConfig, device: torch.device,
               progress: bool, run: RunDirectory | None, state: TrainingState | None, group: Group) -> MetaFitted:
    """The outer loop of meta_train and meta_finetune: Adam on the trainable parameters."""
    model = model.to(device)  # before the optimiser and the saved state take it
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=meta.outer_lr)
    loop = {"step": 0, "best_val": float("inf"), "best_iteration": 0, "history": [], "running": [], "seconds": 0.0}
    best_state = None
    if state is not None:
        state.restore({"model": model}, optimizer)
        loop, best_state = state.info, state.best
    bar = tqdm(range(loop["step"] + 1, meta.iterations + 1), desc=f"meta-train {meta.algorithm}", unit="step",
               disable=not (progress and group.is_main) or None, leave=False)
    clock, step_seconds, steps_timed = time.perf_counter(), 0.0, 0  # throughput counts outer steps only
    for iteration in bar:
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        episodes, weight = sample_share(family.samplers["train"], meta, iteration, group)
        loss = torch.tensor([learner.outer_step(model, episodes.to(device))], device=device)  # reduced with the grads
        group.sync_gradients(model.parameters(), weight, [loss])
        loop["running"].append(float(loss))
        optimizer.step()
        group.broadcast_buffers(model)
        step_seconds, steps_timed = step_seconds + time.perf_counter() - started, steps_timed + 1
        loop["step"] = iteration
        if iteration % meta.val_every == 0 or iteration == meta.iterations:
            val = validation_loss(model, learner, family, meta.val_tasks, meta.seed + 1)
            record = {"step": iteration, "train_loss": sum(loop["running"]) / len(loop["running"]), "val_loss": val,
                      "tasks_per_second": meta.meta_batch * steps_timed / max(step_seconds, 1e-9),
                      "processes": group.world_size}
            loop["history"].append({k: record[k] for k in ("step", "train_loss", "val_loss")})
            loop["running"], step_seconds, steps_timed = [], 0.0, 0
            bar.set_postfix(val_loss=f"{val:.4f}")
            if run is not None:
                run.log(record)
            if val < loop["best_val"]:
                loop["best_val"], loop["best_iteration"] = val, iteration
                best_state = copy.deepcopy(model.state_dict())
        now = time.perf_counter()
        loop["seconds"], clock = loop["seconds"] + now - clock, now
        if run is not None and (iteration % meta.checkpoint_every == 0 or iteration == meta.iterations):
            run.save_state({"model": model}, optimizer, loop, best=best_state)
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return MetaFitted(model.to(CPU).eval(), family, loop["best_iteration"], loop["best_val"], loop["seconds"],
                      loop["history"])


def meta_finetune(model: FewShotModel, family: FewShotFamily, *, iterations: int = 200, meta_batch: int = 8,
                  outer_lr: float = 1e-4, freeze=False, inner_steps: int = 1, val_every: int = 50,
                  val_tasks: int = 50, seed: int = 0, device: str = "cpu", progress: bool = True) -> MetaFitted:
    """Meta-fine-tunes a few-shot model on a family's episodes with the learner its own
    adaptation names (prototypes: protonet, matching: matching, finetune: anil; a model
    meta-trained here: its algorithm), keeping the best weights on the family's
    validation episodes. For a backbone from `mtl_deploy.fewshot`, `freeze` says what of
    it stays fixed (False: train all of it, or parameter name prefixes); the outer
    learning rate is small, as fine-tuning a pretrained network wants. Returns the
    fitted model (on the CPU) and its history, like `meta_train`."""
    from mtl_deploy.models.module_trunk import ModuleTrunk

    if not isinstance(model, FewShotModel):
        raise InputError(f"meta_finetune takes a few-shot model (mtl_deploy.fewshot), got {type(model).__name__}")
    if family.task.out_dim != model.task.out_dim:
        raise InputError(f"the family's episodes have {family.task.out_dim} ways, the model {model.task.out_dim}; "
                         "sample episodes with the model's ways")
    adaptation = model.adaptation
    meta = MetaConfig(algorithm=adaptation.get("algorithm", "protonet"), ways=model.task.out_dim,
                      meta_batch=meta_batch, inner_steps=inner_steps, inner_lr=adaptation.get("inner_lr", 0.01),
                      adapt_steps=adaptation.get("adapt_steps", 10), outer_lr=outer_lr, iterations=iterations,
                      val_every=val_every, val_tasks=val_tasks, checkpoint_every=iterations, seed=seed, device=device,
                      head_lr=adaptation.get("head_lr"), proto_init=bool(adaptation.get("proto_init", False)))
    if isinstance(model.trunk, ModuleTrunk):
        model.trunk.set_freeze(freeze)
    elif freeze is not False:
        raise InputError("freeze applies to a user's backbone (mtl_deploy.fewshot); a built-in trunk trains whole")
    if not any(p.requires_grad for p in model.parameters()):
        raise InputError("nothing to fine-tune: every parameter is frozen; pass freeze=False or fewer prefixes")
    torch.manual_seed(seed)
    return _meta_loop(model.train(), family, make_learner(meta), meta, training_device(device), progress, None, None,
                      Group())


def meta_train_and_save(config: RunConfig, out_dir: str | Path, progress: bool = True, resume: bool = False,
                        group: Group = Group()) -> MetaFitted:
    """Meta-train into the run directory `out_dir` and write the checkpoint there."""
    with RunDirectory(out_dir, writer=group.is_main) as run:
        fitted = meta_train(config, progress, run, run.open(config.to_dict(), resume), group)
        sample = fitted.family.samplers["val"].sample(8, torch.Generator().manual_seed(0)).query_x
        run.finish(lambda directory: write_checkpoint(
            fitted.model, directory, sample_inputs=sample.flatten(0, 1), config=config.to_dict(),
            meta=dataclasses.asdict(config.meta), best_iteration=fitted.best_iteration, val_loss=fitted.val_loss,
            seconds=round(fitted.seconds, 1), history=fitted.history, inner_loop_backend=ops.backend(),
            processes=group.world_size, input_transform=fitted.family.transform))
    return fitted
