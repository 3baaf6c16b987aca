"""Per-task gradients of the shared parameters: one batched backward pass
(`mtl_deploy.mtl.task_jacobian`) against T separate backward passes through the same
forward graph (what LibMTL does), at 4 and 16 tasks. Prints a markdown table of medians
after warm-up, one thread.

Run: PYTHONPATH=. python benchmarks/per_task_gradients.py
"""

from __future__ import annotations

import torch

from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.models.multitask import MultiTaskModel
from mtl_deploy.mtl.jacobian import shared_parameters, task_jacobian
from mtl_deploy.timing import median_seconds

BATCH, FEATURES, HIDDEN = 64, 50, [64, 64]
WARMUP, REPEATS = 20, 200


def setup(n_tasks: int):
    torch.manual_seed(0)
    tasks = [TaskSpec(f"task{i}", "regression") for i in range(n_tasks)]
    model = MultiTaskModel((FEATURES,), tasks, {"type": "mlp", "hidden": HIDDEN})
    x, y = torch.randn(BATCH, FEATURES), torch.randn(BATCH, n_tasks)  # (B, F), (B, T)

    def losses() -> torch.Tensor:
        outputs = model(x)
        return torch.stack([t.loss(outputs[t.name], y[:, i]) for i, t in enumerate(tasks)])  # (T,)

    return losses, shared_parameters(model)


def batched(losses, params) -> torch.Tensor:
    return task_jacobian(losses(), params)


def separate(losses, params) -> torch.Tensor:
    values = losses()
    rows = [torch.cat([g.flatten() for g in torch.autograd.grad(value, params, retain_graph=True)])
            for value in values]
    return torch.stack(rows)


def median_ms(function, *args) -> float:
    return 1e3 * median_seconds(lambda: function(*args), REPEATS, WARMUP)


def main() -> None:
    torch.set_num_threads(1)
    print(f"Per-task gradients of the shared trunk (MLP {FEATURES}->{HIDDEN}, batch {BATCH}), "
          f"forward included, median of {REPEATS} after {WARMUP} warm-up, 1 thread\n")
    print("| tasks | one batched backward (ms) | T backward passes (ms) | speed-up |")
    print("|---:|---:|---:|---:|")
    for n_tasks in (4, 16):
        losses, params = setup(n_tasks)
        torch.testing.assert_close(batched(losses, params), separate(losses, params), atol=1e-5, rtol=1e-4)
        fast, slow = median_ms(batched, losses, params), median_ms(separate, losses, params)
        print(f"| {n_tasks} | {fast:.3f} | {slow:.3f} | {slow / fast:.1f}x |")


if __name__ == "__main__":
    main()
