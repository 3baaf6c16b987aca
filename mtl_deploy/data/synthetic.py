"""A built-in multi-task family whose tasks share a latent representation.

Each task reads its targets off a latent code z_t = tanh(A_t x). With `relatedness` r,
A_t = sqrt(r) A_g + sqrt(1 - r) B_t: at r = 1 every task of a group reads the same code
(a shared trunk learns it once from every task's labels), at r = 0 each task has a code of
its own (sharing only splits the trunk's capacity). `groups` plants task groups that share
a code, which task-relation analysis should recover.
"""

from __future__ import annotations

import math

import torch

from mtl_deploy.data.dataset import MultiTaskDataset
from mtl_deploy.data.tasks import TaskSpec

DEFAULT_TASKS = (
    TaskSpec("price", "regression"),
    TaskSpec("demand", "regression"),
    TaskSpec("risk", "regression"),
    TaskSpec("segment", "multiclass", 4),
    TaskSpec("churn", "binary"),
)


class SyntheticFamily:
    """The tasks (their codes and read-outs) are fixed by `seed`; `sample` draws rows, so
    a training set and a large held-out set come from the very same tasks."""

    def __init__(self, n_features: int = 50, latent_dim: int = 2, relatedness: float = 1.0,
                 tasks: tuple[TaskSpec, ...] = DEFAULT_TASKS, groups: list[int] | None = None,
                 noise: float = 0.2, seed: int = 0):
        if not 0.0 <= relatedness <= 1.0:
            raise ValueError(f"relatedness must lie in [0, 1], got {relatedness}")
        groups = list(groups) if groups is not None else [0] * len(tasks)
        if len(groups) != len(tasks):
            raise ValueError(f"groups has {len(groups)} entries for {len(tasks)} tasks")
        gen = torch.Generator().manual_seed(seed)
        group_codes = {g: torch.randn(latent_dim, n_features, generator=gen) for g in sorted(set(groups))}
        self.tasks, self.groups, self.n_features, self.noise = tuple(tasks), groups, n_features, noise
        self.codes, self.readouts = [], []
        for task, group in zip(self.tasks, groups):
            own = torch.randn(latent_dim, n_features, generator=gen)
            self.codes.append(math.sqrt(relatedness) * group_codes[group] + math.sqrt(1 - relatedness) * own)
            self.readouts.append(torch.randn(latent_dim, task.out_dim, generator=gen))

    def sample(self, n_rows: int, seed: int) -> MultiTaskDataset:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(n_rows, self.n_features, generator=gen)  # (N, F)
        targets = {}
        for task, code, readout in zip(self.tasks, self.codes, self.readouts):
            z = torch.tanh(x @ code.T * (2.0 / math.sqrt(self.n_features)))  # (N, L) this task's latent code
            signal = z @ readout / math.sqrt(z.shape[1])  # (N, out) unit scale
            noisy = signal + self.noise * torch.randn(signal.shape, generator=gen)
            if task.kind == "regression":
                targets[task.name] = noisy
            elif task.kind == "multiclass":
                targets[task.name] = noisy.argmax(dim=1)
            else:
                targets[task.name] = (noisy[:, 0] > 0).to(torch.int64)
        return MultiTaskDataset(x, targets, list(self.tasks))


SPLIT_STREAMS = {"train": 1, "holdout": 2}  # row-sampling seed offsets: same tasks, disjoint draws


def synthetic_family(n_rows: int = 200, seed: int = 0, split: str = "train", **family_options) -> MultiTaskDataset:
    """`n_rows` joint examples of the family `SyntheticFamily(seed=seed, **family_options)`;
    `split="holdout"` draws fresh rows of the same tasks for an unbiased test set."""
    if split not in SPLIT_STREAMS:
        raise ValueError(f"split must be one of {sorted(SPLIT_STREAMS)}, got {split!r}")
    return SyntheticFamily(seed=seed, **family_options).sample(n_rows, seed=seed + SPLIT_STREAMS[split])
