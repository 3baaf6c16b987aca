"""Few-shot evaluation as the literature reports it: over many held-out episodes, the mean
query metric with its 95% confidence interval after 0, 1 and 10 adaptation steps, the
median, and the number of diverged tasks; beside it, a model pretrained on the pooled
meta-training tasks then fine-tuned, and a model trained from scratch on the support set."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from mtl_deploy.config import MetaConfig
from mtl_deploy.data.episodes import Episodes
from mtl_deploy.data.fewshot import FewShotFamily
from mtl_deploy.errors import InputError
from mtl_deploy.meta.gradient_based import adapt_params, predict_with
from mtl_deploy.meta.learners import GradientLearner, make_learner
from mtl_deploy.meta.metric import metric_logits
from mtl_deploy.models.fewshot import FewShotModel

EXPLODED = 10.0  # a task whose query loss ends above 10x its unadapted loss (or non-finite) diverged
SCRATCH_STEPS = 100


@dataclass
class EvalRow:
    method: str
    steps: str
    metric: str
    mean: float
    ci95: float
    median: float
    diverged: int
    episodes: int
    per_task: torch.Tensor | None = field(default=None, repr=False, compare=False)  # (episodes,) metric values


def paired_difference(row: EvalRow, reference: EvalRow) -> tuple[float, float]:
    """Mean and 95% CI half-width of row - reference over the same episodes (diverged ones
    included). Pairing cancels the episode-to-episode spread that both rows share, so it
    tells a small real gap from noise where two overlapping CIs cannot."""
    if row.per_task is None or reference.per_task is None or len(row.per_task) != len(reference.per_task):
        raise ValueError("a paired difference needs both rows' values on the same episodes")
    difference = (row.per_task - reference.per_task).double()
    spread = float(difference.std()) if len(difference) > 1 else 0.0
    return float(difference.mean()), 1.96 * spread / math.sqrt(len(difference))


def summarize(method: str, steps: str, metric: str, values: torch.Tensor, losses: torch.Tensor,
              unadapted: torch.Tensor | None = None) -> EvalRow:
    """Mean ± 95% CI and median over the tasks that did not diverge (counted apart)."""
    diverged = ~torch.isfinite(losses)
    if unadapted is not None:
        diverged |= losses > EXPLODED * unadapted
    kept = values[~diverged].double()
    n = len(kept)
    std = float(kept.std()) if n > 1 else 0.0
    return EvalRow(method, steps, metric, float(kept.mean()) if n else math.nan, 1.96 * std / math.sqrt(max(n, 1)),
                   float(kept.median()) if n else math.nan, int(diverged.sum()), len(values), values)


def per_task_scores(model: FewShotModel, outputs: torch.Tensor, targets: torch.Tensor):
    """(metric values, losses) per task: MSE for regression, accuracy for classification."""
    if model.task.kind == "regression":
        mse = (outputs - targets).pow(2).mean(dim=(1, 2))
        return mse, mse
    t, q, c = outputs.shape
    losses = F.cross_entropy(outputs.reshape(t * q, c), targets.reshape(-1), reduction="none").view(t, q).mean(1)
    return (outputs.argmax(-1) == targets).float().mean(1), losses


@torch.no_grad()
def evaluate_adapted(method: str, model: FewShotModel, episodes: Episodes, steps: tuple[int, ...], lr: float,
                     head_only: bool, head_lr: float | None = None, proto_init: bool = False) -> list[EvalRow]:
    """Rows for a gradient-adapted model at each step count, all episodes batched."""
    metric = "mse" if model.task.kind == "regression" else "accuracy"

    def scores(count: int):
        params = adapt_params(model, episodes.support_x, episodes.support_y, steps=count, lr=lr, order=1,
                              head_only=head_only, head_lr=head_lr, proto_init=proto_init)
        return per_task_scores(model, predict_with(model, params, episodes.query_x, head_only), episodes.query_y)

    results = {count: scores(count) for count in {0, *steps}}  # 0 steps: the divergence reference
    return [summarize(method, str(count), metric, *results[count], results[0][1]) for count in steps]


def fresh_like(model: FewShotModel) -> FewShotModel:
    """A randomly initialised linear-head model of the same architecture and normalisation."""
    fresh = FewShotModel.from_config({**model.config(), "head": "linear", "learned_lr": False})
    fresh.set_normalization(model.normalize.mean, model.normalize.std)
    return fresh


def pretrained_baseline(family: FewShotFamily, like: FewShotModel, meta: MetaConfig, iterations: int) -> FewShotModel:
    """The MAML paper's baseline: one network trained on the pooled meta-training tasks
    (regression: all tasks' points together; classification: all training classes as one
    classifier, whose head is then replaced by a zero N-way head)."""
    torch.manual_seed(meta.seed)
    model = fresh_like(like)
    sampler = family.samplers["train"]
    generator = torch.Generator().manual_seed(meta.seed + 7)
    if model.task.kind == "regression":
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(iterations):
            batch = sampler.sample(meta.meta_batch, generator)
            x = torch.cat([batch.support_x, batch.query_x], 1).flatten(0, 1)
            y = torch.cat([batch.support_y, batch.query_y], 1).flatten(0, 1)
            optimizer.zero_grad()
            F.mse_loss(model(x)[model.task.name], y).backward()
            optimizer.step()
        return model.eval()
    pooled = sampler.episodes
    classifier = torch.nn.Linear(model.trunk.out_features, len(pooled.classes))
    rows = torch.cat(list(pooled.rows.values()))  # the meta-training classes' rows only
    labels = torch.cat([torch.full((len(r),), i) for i, r in enumerate(pooled.rows.values())])
    optimizer = torch.optim.Adam([*model.parameters(), *classifier.parameters()], lr=1e-3)
    for _ in range(iterations):
        batch = torch.randint(len(rows), (64,), generator=generator)
        optimizer.zero_grad()
        F.cross_entropy(classifier(model.embed(pooled.x[rows[batch]])), labels[batch]).backward()
        optimizer.step()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    return model.eval()


def evaluate_fewshot(model: FewShotModel, family: FewShotFamily, meta: MetaConfig, episodes: int = 600,
                     steps: tuple[int, ...] = (0, 1, 10), seed: int = 1234, baselines: bool = True,
                     pretrain_iterations: int = 2000, progress: bool = False, split: str = "test") -> list[EvalRow]:
    """Evaluation table on `episodes` meta-test tasks (the same tasks for every method), or
    on those of another `split` (meta-validation, to compare training options); `progress`
    shows a bar on stderr, one tick per method."""
    if split not in family.samplers:
        raise InputError(f"the {meta.family} family here has no {split} classes; give it some (Omniglot: "
                         "images_evaluation.zip) or evaluate with --omniglot-runs all_runs.zip")
    test = family.samplers[split].sample(episodes, torch.Generator().manual_seed(seed))
    learner = make_learner(meta)
    model = model.eval()
    bar = tqdm(total=3 if baselines else 1, desc=f"evaluate {episodes} episodes", unit="method",
               disable=not progress, file=sys.stderr)
    bar.set_postfix_str(meta.algorithm)
    if isinstance(learner, GradientLearner):
        rows = evaluate_adapted(meta.algorithm, model, test, steps, meta.inner_lr, learner.head_only, learner.head_lr,
                                learner.proto_init)
    else:
        with torch.no_grad():
            logits = metric_logits(model, meta.algorithm, test)
        rows = [summarize(meta.algorithm, "-", "accuracy", *per_task_scores(model, logits, test.query_y))]
    bar.update()
    if baselines:
        torch.manual_seed(seed)
        head_only = model.task.kind != "regression"
        bar.set_postfix_str("pretrained baseline")
        pretrained = pretrained_baseline(family, model, meta, pretrain_iterations)
        rows += evaluate_adapted("pretrained", pretrained, test, steps, meta.inner_lr, head_only)
        bar.update()
        bar.set_postfix_str("scratch baseline")
        rows += evaluate_adapted("scratch", fresh_like(model).eval(), test, (SCRATCH_STEPS,), meta.inner_lr, False)
        bar.update()
    bar.close()
    return rows
