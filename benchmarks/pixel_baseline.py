"""A no-learning reference for the digits table: each query goes to the nearest class mean
of the normalised raw pixels of the support set, on the same 600 held-out episodes that
`benchmarks/fewshot_eval.py` evaluates (mean ± 95% CI), for the digits as shipped and for
the presets' translated digits.

Run: PYTHONPATH=. python benchmarks/pixel_baseline.py
"""

from __future__ import annotations

import torch

from mtl_deploy.config import resolve_config
from mtl_deploy.data.dataset import normalization_stats
from mtl_deploy.meta.evaluate import summarize
from mtl_deploy.meta.metric import prototypes
from mtl_deploy.meta.train import family_of


def main() -> None:
    meta = resolve_config(preset="digits-protonet").meta
    print("| digits | shots | nearest class mean of normalised pixels |\n|---|---|---|")
    for translate, shots in [(t, s) for t in (0, meta.translate) for s in (1, 5)]:
        meta.shots, meta.translate = shots, translate
        family = family_of(meta)
        mean, std = normalization_stats(family.train_rows)
        test = family.samplers["test"].sample(600, torch.Generator().manual_seed(1234))  # evaluate_fewshot's episodes
        support = ((test.support_x - mean) / std).flatten(2)  # (T, S, D)
        query = ((test.query_x - mean) / std).flatten(2)  # (T, Q, D)
        means = prototypes(support, test.support_y, meta.ways)  # (T, ways, D)
        correct = (torch.cdist(query, means).argmin(-1) == test.query_y).float().mean(1)  # (T,)
        row = summarize("pixels", "-", "accuracy", correct, torch.zeros_like(correct))
        label = f"offset by up to {translate} px" if translate else "as shipped"
        print(f"| {label} | {shots} | {row.mean:.3f} ± {row.ci95:.3f} |")


if __name__ == "__main__":
    main()
