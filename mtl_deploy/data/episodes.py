"""Few-shot episodes: a batch of T tasks, each with a support set to adapt on and a query
set to judge the adaptation, and the N-way K-shot sampler over any labelled data.

Class ids inside an episode are relabelled 0..N-1 in a random order, so a model cannot
memorise which global class sits at which output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mtl_deploy.errors import InputError


@dataclass
class Episodes:
    """T tasks. Regression targets are (T, n, out) floats, class targets (T, n) int64."""

    support_x: torch.Tensor  # (T, S, *input_shape)
    support_y: torch.Tensor
    query_x: torch.Tensor  # (T, Q, *input_shape)
    query_y: torch.Tensor

    def __post_init__(self):  # the fused kernels take contiguous tensors
        for name in ("support_x", "support_y", "query_x", "query_y"):
            setattr(self, name, getattr(self, name).contiguous())

    @property
    def tasks(self) -> int:
        return self.support_x.shape[0]

    def to(self, device: torch.device) -> "Episodes":
        """The same tasks on `device` (they are sampled on the CPU)."""
        return Episodes(self.support_x.to(device), self.support_y.to(device), self.query_x.to(device),
                        self.query_y.to(device))

    def select(self, tasks: range) -> "Episodes":
        """The tasks in the contiguous range `tasks`, as a batch."""
        s = slice(tasks.start, tasks.stop)
        return Episodes(self.support_x[s], self.support_y[s], self.query_x[s], self.query_y[s])


class ClassEpisodes:
    """N-way K-shot (+Q queries per class) episodes over labelled rows `x` (N, ...) with
    class ids `y` (N,), restricted to `classes` (a split: meta-train, -val or -test)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, classes: list[int] | None = None):
        if len(x) != len(y):
            raise InputError(f"{len(x)} inputs but {len(y)} labels")
        if not torch.isfinite(x).all():
            raise InputError("inputs contain NaN or inf; clean or drop those rows")
        classes = sorted(set(y.tolist())) if classes is None else list(classes)
        self.x = x.float()
        self.rows = {c: torch.nonzero(y == c).flatten() for c in classes}  # class -> row indices
        empty = [c for c, rows in self.rows.items() if len(rows) == 0]
        if empty:
            raise InputError(f"class(es) {empty} have no examples")
        self.classes = classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def sample(self, tasks: int, ways: int, shots: int, queries: int, generator: torch.Generator) -> Episodes:
        if ways > len(self.classes):
            raise InputError(f"{ways}-way episodes need {ways} classes; this split has {len(self.classes)}")
        fewest = min(len(r) for r in self.rows.values())
        if shots + queries > fewest:
            raise InputError(f"{shots} shots + {queries} queries per class need {shots + queries} examples; "
                             f"the smallest class here has {fewest}")
        support_rows, query_rows = [], []
        for _ in range(tasks):
            chosen = torch.randperm(len(self.classes), generator=generator)[:ways]
            picks = []
            for c in chosen.tolist():
                rows = self.rows[self.classes[c]]
                picks.append(rows[torch.randperm(len(rows), generator=generator)[:shots + queries]])
            picks = torch.stack(picks)  # (ways, shots + queries) row indices; way i is label i
            support_rows.append(picks[:, :shots].flatten())
            query_rows.append(picks[:, shots:].flatten())
        labels = torch.arange(ways)
        support_y = labels.repeat_interleave(shots).expand(tasks, -1)  # (T, ways * shots)
        query_y = labels.repeat_interleave(queries).expand(tasks, -1)
        return Episodes(self.x[torch.stack(support_rows)], support_y.contiguous(),
                        self.x[torch.stack(query_rows)], query_y.contiguous())


def split_classes(classes: list[int], fractions: tuple[float, float, float], seed: int) -> tuple[list[int], ...]:
    """Disjoint meta-train / meta-validation / meta-test class lists, seeded."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise InputError(f"split fractions must be >= 0 and sum to 1, got {list(fractions)}")
    order = [classes[i] for i in torch.randperm(len(classes), generator=torch.Generator().manual_seed(seed))]
    n_train = round(fractions[0] * len(order))
    n_val = round(fractions[1] * len(order))
    return order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
