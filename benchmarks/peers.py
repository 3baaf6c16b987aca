"""The sinusoid MAML case in peer libraries, for benchmarks/run.py: JAX
(`jit(vmap(grad))`, CPU, one thread) and `higher` (the PyTorch MAML library).

Both come from the `bench` extra (`make bench` installs it); without them
`sinusoid_rows` returns no rows and says why. JAX reads its thread count once, at
import, so it runs at one thread only.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

# XLA's CPU backend takes its thread pool size from these flags at first import.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")


def jax_variants(params, xs, ys, xq, yq, steps, lr):
    """phase -> callable for adaptation and both meta-steps, jitted and warmed by the caller."""
    import jax
    import jax.numpy as jnp

    theta0 = [jnp.asarray(p.detach().numpy()) for p in params]
    xs, ys, xq, yq = (jnp.asarray(t.numpy()) for t in (xs, ys, xq, yq))

    def forward(theta, x):
        h = x
        for i in range(0, len(theta), 2):
            h = h @ theta[i].T + theta[i + 1]
            if i + 2 < len(theta):
                h = jax.nn.relu(h)
        return h

    def loss(theta, x, y):
        return jnp.mean((forward(theta, x) - y) ** 2)

    def adapt(theta, x, y, first_order=False):
        for _ in range(steps):
            g = jax.grad(loss)(theta, x, y)
            if first_order:
                g = jax.lax.stop_gradient(g)
            theta = [p - lr * gi for p, gi in zip(theta, g)]
        return theta

    adapt_all = jax.jit(jax.vmap(adapt, in_axes=(None, 0, 0)))

    def meta(first_order):
        def outer(theta):
            per_task = jax.vmap(lambda x, y, q, r: loss(adapt(theta, x, y, first_order), q, r))
            return per_task(xs, ys, xq, yq).sum()
        return jax.jit(jax.grad(outer))

    second, first = meta(False), meta(True)

    def ready(tree):
        jax.block_until_ready(tree)

    return {
        "adapt": lambda: ready(adapt_all(theta0, xs, ys)),
        "2nd-order step": lambda: ready(second(theta0)),
        "1st-order step": lambda: ready(first(theta0)),
    }


def higher_variants(module, xs, ys, xq, yq, steps, lr):
    """phase -> callable: one task at a time through higher.innerloop_ctx, as its docs show."""
    import higher

    opt = torch.optim.SGD(module.parameters(), lr=lr)

    def run(meta_order):
        for t in range(xs.shape[0]):
            with higher.innerloop_ctx(module, opt, copy_initial_weights=False,
                                      track_higher_grads=meta_order == 2) as (fmodel, diffopt):
                for _ in range(steps):
                    diffopt.step(F.mse_loss(fmodel(xs[t]), ys[t]))
                if meta_order:
                    F.mse_loss(fmodel(xq[t]), yq[t]).backward()
        module.zero_grad(set_to_none=True)

    return {"adapt": lambda: run(0), "2nd-order step": lambda: run(2), "1st-order step": lambda: run(1)}


def sinusoid_rows(params, module, xs, ys, xq, yq, steps, lr, timer) -> tuple[dict, list[str]]:
    """{(phase, variant): seconds} for every peer that imports, and a note per one that does not."""
    rows, notes = {}, []
    for name, make in (("JAX jit(vmap(grad))", jax_variants), ("higher", higher_variants)):
        try:
            variants = make(params if make is jax_variants else module, xs, ys, xq, yq, steps, lr)
        except ImportError as err:
            notes.append(f"{name} not run ({err}); `make bench` installs the bench extra")
            continue
        for phase, fn in variants.items():
            rows[phase, name] = timer(fn)
    return rows, notes
