"""Meta-training: sample a meta-batch of tasks, take one outer optimiser step on the
learner's meta-gradient, validate on held-out tasks now and then, keep the best weights,
and write a checkpoint whose manifest carries the algorithm and its hyper-parameters."""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mtl_deploy import ops
from mtl_deploy.checkpoint import save
from mtl_deploy.config import MetaConfig, RunConfig
from mtl_deploy.data.dataset import normalization_stats
from mtl_deploy.data.fewshot import FewShotFamily, fewshot_family
from mtl_deploy.errors import InputError
from mtl_deploy.meta.learners import make_learner
from mtl_deploy.meta.model import FewShotModel


@dataclass
class MetaFitted:
    model: FewShotModel
    family: FewShotFamily
    best_iteration: int
    val_loss: float
    seconds: float
    history: list[dict]


def family_of(meta: MetaConfig) -> FewShotFamily:
    return fewshot_family(meta.family, meta.ways, meta.shots, meta.queries, meta.path, tuple(meta.class_split),
                          meta.image_size, meta.seed)


def build_fewshot_model(config: RunConfig, family: FewShotFamily) -> FewShotModel:
    learner = make_learner(config.meta)
    meta = config.meta
    whole_network = meta.algorithm in ("maml", "fomaml", "metasgd", "reptile")
    if whole_network and config.model.trunk.get("type", "mlp") != "mlp":
        raise InputError(f"{meta.algorithm} adapts the whole network, which needs an MLP trunk; "
                         "use anil, protonet or matching with a conv trunk")
    adaptation = {"algorithm": meta.algorithm, "inner_lr": meta.inner_lr, "adapt_steps": meta.adapt_steps}
    model = FewShotModel(family.input_shape, family.task, config.model.trunk, learner.head,
                         learned_lr=meta.algorithm == "metasgd", adaptation=adaptation)
    if family.train_rows is not None:
        model.set_normalization(*normalization_stats(family.train_rows))
    if model.inner_lrs is not None:
        with torch.no_grad():
            for rate in model.inner_lrs:
                rate.fill_(meta.inner_lr)
    return model


def validation_loss(model, learner, family: FewShotFamily, tasks: int, seed: int) -> float:
    episodes = family.samplers["val"].sample(tasks, torch.Generator().manual_seed(seed))
    model.eval()
    with torch.no_grad():
        loss = float(learner.query_loss(model, episodes))
    model.train()
    return loss


def meta_train(config: RunConfig, progress: bool = True) -> MetaFitted:
    meta = config.meta
    if meta.iterations < 1 or meta.meta_batch < 1 or meta.val_every < 1:
        raise InputError("meta.iterations, meta.meta_batch and meta.val_every must be >= 1")
    family = family_of(meta)
    learner = make_learner(meta)
    torch.manual_seed(meta.seed)
    model = build_fewshot_model(config, family)
    optimizer = torch.optim.Adam(model.parameters(), lr=meta.outer_lr)
    tasks = torch.Generator().manual_seed(meta.seed)
    best = (float("inf"), 0, None)
    history, running, start = [], [], time.perf_counter()
    bar = tqdm(range(1, meta.iterations + 1), desc=f"meta-train {meta.algorithm}", unit="step",
               disable=not progress or None, leave=False)
    for iteration in bar:
        optimizer.zero_grad(set_to_none=True)
        running.append(learner.outer_step(model, family.samplers["train"].sample(meta.meta_batch, tasks)))
        optimizer.step()
        if iteration % meta.val_every == 0 or iteration == meta.iterations:
            val = validation_loss(model, learner, family, meta.val_tasks, meta.seed + 1)
            history.append({"iteration": iteration, "train_loss": sum(running) / len(running), "val_loss": val})
            running = []
            bar.set_postfix(val_loss=f"{val:.4f}")
            if val < best[0]:
                best = (val, iteration, copy.deepcopy(model.state_dict()))
    bar.close()
    model.load_state_dict(best[2])
    return MetaFitted(model.eval(), family, best[1], best[0], time.perf_counter() - start, history)


def meta_train_and_save(config: RunConfig, out_dir: str | Path, progress: bool = True) -> MetaFitted:
    fitted = meta_train(config, progress)
    sample = fitted.family.samplers["val"].sample(8, torch.Generator().manual_seed(0)).query_x
    save(fitted.model, out_dir, sample_inputs=sample.flatten(0, 1), config=config.to_dict(),
         meta=dataclasses.asdict(config.meta), best_iteration=fitted.best_iteration, val_loss=fitted.val_loss,
         seconds=round(fitted.seconds, 1), history=fitted.history, inner_loop_backend=ops.backend())
    return fitted
