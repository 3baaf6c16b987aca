"""End-to-end meta-training rate of `train --preset sinusoid-maml`, for benchmarks/run.py.

Runs the preset's own training loop (`meta_train`) for a few hundred outer steps and
reports tasks per second, beside the same loop with each meta-step taken the previous
way (`ops.inner_loop` forward, its autograd backward, the query loss in PyTorch); then
profiles a shorter run to split each step into time inside the fused ops and outside.
"""

from __future__ import annotations

import time
from unittest import mock

import torch

from mtl_deploy.config import resolve_config
from mtl_deploy.meta import learners
from mtl_deploy.meta.train import meta_train

FUSED_OPS = ("mtl_deploy::maml_step", "mtl_deploy::inner_loop", "mtl_deploy::inner_loop_backward")


def _config(iterations: int):
    return resolve_config(preset="sinusoid-maml", overrides={
        "meta.iterations": iterations, "meta.val_every": iterations, "meta.val_tasks": 10})


def _tasks_per_second(iterations: int) -> float:
    config = _config(iterations)
    start = time.perf_counter()
    meta_train(config, progress=False)
    return config.meta.meta_batch * iterations / (time.perf_counter() - start)  # one validation of 10 tasks included


def sinusoid_maml_rate(iterations: int = 300, profiled: int = 50) -> dict[str, float]:
    """tasks/s over `iterations` outer steps, fused and the previous way, and the share of
    profiled step time outside the fused ops."""
    _tasks_per_second(20)  # warm-up: the first run in a process pays one-time set-up costs
    rate = _tasks_per_second(iterations)
    with mock.patch.object(learners, "fused_meta_step", lambda *args, **kwargs: None):
        previous = _tasks_per_second(iterations)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        meta_train(_config(profiled), progress=False)
        profiled_seconds = time.perf_counter() - start
    inside = sum(e.cpu_time_total for e in prof.key_averages() if e.key in FUSED_OPS) / 1e6
    return {"tasks/s": rate, "previous tasks/s": previous, "share outside the fused ops": 1 - inside / profiled_seconds}
