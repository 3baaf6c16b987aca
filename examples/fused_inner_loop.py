"""Fast few-shot adaptation with the fused kernels: MAML on sine waves.

Adapts one MLP to 25 sine-wave tasks at once (all tasks x all steps in one call),
then takes second-order meta-gradient steps through that adaptation, and routes a
batch through per-task heads. Run: python examples/fused_inner_loop.py
"""

import torch
import torch.nn.functional as F

from mtl_deploy import ops

torch.manual_seed(0)
T, K, STEPS, LR = 25, 10, 5, 0.01


def sine_tasks():
    amplitude, phase = 0.1 + 4.9 * torch.rand(T, 1, 1), 3.14 * torch.rand(T, 1, 1)
    x_support, x_query = 10 * torch.rand(T, K, 1) - 5, 10 * torch.rand(T, K, 1) - 5  # (T, K, 1)
    return x_support, amplitude * torch.sin(x_support + phase), x_query, amplitude * torch.sin(x_query + phase)


def query_loss(adapted, x, y):
    """Mean MSE of every task's adapted MLP on its own query set."""
    losses = [
        F.mse_loss(torch.func.functional_call(model, dict(zip(names, [p[t] for p in adapted])), (x[t],)), y[t])
        for t in range(T)
    ]
    return torch.stack(losses).mean()


model = torch.nn.Sequential(torch.nn.Linear(1, 40), torch.nn.ReLU(), torch.nn.Linear(40, 40), torch.nn.ReLU(),
                            torch.nn.Linear(40, 1))
names = [n for n, _ in model.named_parameters()]
params = list(model.parameters())  # [W1, b1, W2, b2, W3, b3], nn.Linear layout
optimizer = torch.optim.Adam(params, lr=1e-3)
print(f"backend: {ops.backend()}")

for step in range(30):
    xs, ys, xq, yq = sine_tasks()
    adapted = ops.inner_loop(params, xs, ys, steps=STEPS, lr=LR, order=2)  # each (T, *p.shape)
    loss = query_loss(adapted, xq, yq)
    optimizer.zero_grad()
    loss.backward()  # exact MAML meta-gradient, Hessian-vector products in C++
    optimizer.step()
    if step % 10 == 0:
        print(f"meta-step {step:2d}: query loss after adaptation {loss.item():.3f}")

xs, ys, xq, yq = sine_tasks()
with torch.no_grad():
    before = query_loss([p.expand(T, *p.shape) for p in params], xq, yq)
    after = query_loss(ops.inner_loop(params, xs, ys, steps=STEPS, lr=LR), xq, yq)
print(f"new tasks: query loss {before.item():.3f} before adaptation, {after.item():.3f} after")

# One batch whose rows belong to different tasks, each through its own head.
features, heads, bias = torch.randn(8, 256), torch.randn(4, 10, 256), torch.zeros(4, 10)
task_of_row = torch.tensor([0, 3, 1, 1, 2, 0, 3, 2])
print(f"routed heads output: {tuple(ops.multihead_linear(features, heads, bias, task_of_row).shape)}")
