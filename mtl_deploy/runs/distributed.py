"""Data-parallel training over torch.distributed, as launched by `torchrun`.

Each rank works on its share of the global batch (a slice of the meta-batch's tasks, or of
a minibatch's rows) and the gradients are summed across ranks weighted by each share, so
that every rank holds the gradient of the whole batch and the identical optimiser step
keeps the replicas equal. gloo on the CPU; nccl, one GPU per rank, when the run's device
is cuda. Outside torchrun (no WORLD_SIZE in the environment) everything here is a no-op
on a group of one.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mtl_deploy.errors import InputError
from mtl_deploy.runs.device import CPU


@dataclass(frozen=True)
class Group:
    """This process's place among `world_size` data-parallel processes."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs and progress bars."""
        return self.rank == 0

    def share(self, count: int) -> range:
        """This rank's contiguous share of `count` items (the first ranks take one more
        when `count` does not divide evenly; empty when `count` < world size)."""
        base, extra = divmod(count, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (self.rank < extra))

    def sum_weighted(self, tensors: list[torch.Tensor], weight: float) -> None:
        """In place: each tensor becomes Σ_ranks weight_rank · tensor_rank. With
        weight = (this rank's share) / (global batch), per-rank means become the global
        mean; a rank with an empty share (weight 0) adds zeros, whatever its tensors hold."""
        if self.world_size == 1 or not tensors:
            return
        flat = torch.cat([t.detach().reshape(-1) for t in tensors])
        flat = flat * weight if weight > 0 else torch.zeros_like(flat)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()

    def sync_gradients(self, parameters, weight: float, extra: list[torch.Tensor] = ()) -> None:
        """`sum_weighted` over the gradients of `parameters` (missing ones count as zero)
        and the `extra` tensors (the step's losses), in one all-reduce."""
        if self.world_size == 1:
            return
        params = [p for p in parameters if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.sum_weighted([*(p.grad for p in params), *extra], weight)

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Rank 0's batch-norm running statistics on every rank, as DDP does; the other
        buffers (normalisation statistics, prototypes) do not change while training."""
        if self.world_size == 1:
            return
        for norm in module.modules():
            if isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.track_running_stats:
                for buffer in norm.buffers():
                    dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def from_environment(device: torch.device = CPU) -> Group:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE,
    MASTER_ADDR, ...), or a group of one when not launched by torchrun. A run on `device`
    cuda gives each rank the GPU of its LOCAL_RANK (plain "cuda" then means that one) and
    joins over nccl; a run on the CPU over gloo."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Group()
    if not dist.is_initialized():  # joined once per process, left at exit: runs in one process share it
        if device.type == "cuda":
            torch.cuda.set_device(rank_gpu(device))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
    return Group(dist.get_rank(), dist.get_world_size())


def rank_gpu(device: torch.device) -> int:
    """This rank's GPU under torchrun: the one of its LOCAL_RANK, one GPU per process."""
    local_rank, count = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
    if device.index is not None:
        raise InputError(f"under torchrun each process trains on the GPU of its LOCAL_RANK, not on {device}; "
                         "use --device cuda")
    if local_rank >= count:
        raise InputError(f"process {local_rank} of this node has no GPU of its own ({count} visible); "
                         f"start torchrun with --nproc_per_node {count} or fewer")
    return local_rank


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator meta-batch `step` is drawn from, seeded by (seed, step) alone: every
    rank draws the same meta-batch and keeps its own share of the tasks, so the ranks work
    on different tasks and a run gives the same model on any number of processes. (Drawing
    a meta-batch is cheap next to adapting to it.)"""
    state = np.random.SeedSequence([seed, step]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
