"""Side-by-side benchmarks of the fused kernels (`make bench`).

One process, the same inputs for every variant, medians after warm-up, at 1 and 2
threads. Cases: A sinusoid MAML (adaptation, first- and second-order meta-steps),
B ANIL head adaptation, C multi-head layers (every head, routed rows). Prints
markdown tables and writes them, with the targets met or missed, to
benchmarks/RESULTS.md. `--quick` (few repeats, no torch.compile) is a smoke run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from mtl_deploy import ops
from mtl_deploy.ops.reference import task_losses
from mtl_deploy.timing import median_seconds

import meta_training
import peers

RESULTS = Path(__file__).with_name("RESULTS.md")


@dataclass
class Settings:
    repeats: int
    budget: float  # seconds of timing per variant, at most
    compile: bool


def median_time(fn, s: Settings) -> float:
    """Median seconds per call after two warm-up calls, within the settings' budget."""
    return median_seconds(fn, s.repeats, warmup=2, budget=s.budget)


def matmul_gflops(s: Settings) -> float:
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    return 2 * 512**3 / median_time(lambda: a @ b, s) / 1e9


# ---- MLP task families ----------------------------------------------------


def mlp_params(widths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        params += [torch.randn(fan_out, fan_in, generator=gen) / fan_in**0.5, torch.zeros(fan_out)]
    return [p.requires_grad_() for p in params]


def single_loss(params, x, y, loss):
    """One task (K, in) through the MLP; the loss the inner loop minimises."""
    h = x
    for i in range(0, len(params), 2):
        h = F.linear(h, params[i], params[i + 1])
        if i + 2 < len(params):
            h = torch.relu(h)
    return F.mse_loss(h, y) if loss == "mse" else F.cross_entropy(h, y)


def loop_adapt(params, x, y, steps, lr, loss, order=1):
    """(a) One task at a time with torch.autograd.grad."""
    adapted = []
    for t in range(x.shape[0]):
        theta = list(params)
        for _ in range(steps):
            g = torch.autograd.grad(single_loss(theta, x[t], y[t], loss), theta, create_graph=order == 2)
            theta = [p - lr * gi for p, gi in zip(theta, g)]
        adapted.append(theta)
    return [torch.stack(ps) for ps in zip(*adapted)]


class Mlp(torch.nn.Module):
    def __init__(self, widths):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = torch.relu(x)
        return x


def vmap_adapter(module, steps, lr, loss, order=2):
    """(b) torch.func: vmap over tasks of `steps` grad + functional_call updates."""
    names = [n for n, _ in module.named_parameters()]

    def task_loss(theta, x, y):
        out = functional_call(module, dict(zip(names, theta)), (x,))
        return F.mse_loss(out, y) if loss == "mse" else F.cross_entropy(out, y)

    def adapt(theta, x, y):
        for _ in range(steps):
            g = grad(task_loss)(theta, x, y)
            if order == 1:
                g = [gi.detach() for gi in g]
            theta = [p - lr * gi for p, gi in zip(theta, g)]
        return theta

    return vmap(adapt, in_dims=(None, 0, 0)), task_loss


def batched_grads(params, x, y, loss):
    """(d) Hand-batched forward (bmm) with the backward written out; params are (T, ...)."""
    hs, h = [x], x
    layers = len(params) // 2
    for i in range(layers):
        h = torch.baddbmm(params[2 * i + 1].unsqueeze(1), h, params[2 * i].transpose(1, 2))  # (T, K, out)
        if i + 1 < layers:
            h = torch.relu(h)
        hs.append(h)
    t, k, c = h.shape
    if loss == "mse":
        d = (2.0 / (k * c)) * (h - y)
    else:
        d = (torch.softmax(h, -1) - F.one_hot(y, c).to(h.dtype)) / k
    grads = [None] * len(params)
    for i in reversed(range(layers)):
        grads[2 * i] = torch.bmm(d.transpose(1, 2), hs[i])  # (T, out, in)
        grads[2 * i + 1] = d.sum(1)
        if i:
            d = torch.bmm(d, params[2 * i]) * (hs[i] > 0)
    return grads


def batched_adapt(params, x, y, steps, lr, loss):
    theta = [p.detach().unsqueeze(0).expand(x.shape[0], *p.shape) for p in params]
    for _ in range(steps):
        theta = [p - lr * g for p, g in zip(theta, batched_grads(theta, x, y, loss))]
    return theta


def adapt_flops(widths, t, k, steps):
    """Forward + weight gradient + input gradient (not for the first layer), per step."""
    macs = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    first = widths[0] * widths[1]
    return 2 * t * k * steps * (3 * macs - first)


# ---- cases -------------------------------------------------------------------


def case_a(s: Settings, compiled: dict, with_peers: bool):
    widths, t, k, steps, lr = [1, 40, 40, 1], 25, 10, 5, 0.01
    gen = torch.Generator().manual_seed(0)
    amp, phase = 0.1 + 4.9 * torch.rand(t, 1, 1, generator=gen), 3.14 * torch.rand(t, 1, 1, generator=gen)
    xs, xq = (10 * torch.rand(t, k, 1, generator=gen) - 5 for _ in range(2))  # (T, K, 1) support, query
    ys, yq = amp * torch.sin(xs + phase), amp * torch.sin(xq + phase)
    params, module = mlp_params(widths), Mlp(widths)
    vm, _ = vmap_adapter(module, steps, lr, "mse")
    rows = {}

    with torch.no_grad():
        rows["adapt", "fused"] = median_time(lambda: ops.inner_loop(params, xs, ys, steps=steps, lr=lr), s)
        rows["adapt", "hand-batched bmm"] = median_time(lambda: batched_adapt(params, xs, ys, steps, lr, "mse"), s)
    rows["adapt", "loop + autograd.grad"] = median_time(lambda: loop_adapt(params, xs, ys, steps, lr, "mse"), s)
    detached = [p.detach() for p in params]
    rows["adapt", "vmap(grad)"] = median_time(lambda: vm(detached, xs, ys), s)
    if s.compile:
        rows["adapt", "torch.compile(vmap)"] = time_compiled(compiled, "a", vm, (detached, xs, ys), s)

    def meta(adapt_fn):
        """Meta-gradient of the summed query losses, all through autograd."""
        def step():
            loss = task_losses(adapt_fn(), xq, yq, "mse", "relu").sum()
            torch.autograd.grad(loss, params)
        return step

    def fused_meta(order):
        """The whole meta-step in one call: inner loop, query loss and meta-gradient."""
        return lambda: ops.maml_step(params, xs, ys, xq, yq, steps=steps, lr=lr, order=order)

    def vmap_meta(order):
        adapt, task_loss = vmap_adapter(module, steps, lr, "mse", order)

        def outer(theta):
            return vmap(task_loss, in_dims=(0, 0, 0))(adapt(theta, xs, ys), xq, yq).sum()

        return lambda: grad(outer)(detached)

    for order, tag in ((2, "2nd-order step"), (1, "1st-order step")):
        rows[tag, "fused"] = median_time(fused_meta(order), s)
        rows[tag, "loop + autograd.grad"] = median_time(meta(lambda: loop_adapt(params, xs, ys, steps, lr, "mse", order)), s)
        rows[tag, "vmap(grad)"] = median_time(vmap_meta(order), s)
    rows["2nd-order step", "batched bmm + autograd"] = median_time(
        meta(lambda: ops.inner_loop_reference(params, xs, ys, steps=steps, lr=lr)), s
    )

    def hand_first_order():
        adapted = batched_adapt(params, xs, ys, steps, lr, "mse")
        return [g.sum(0) for g in batched_grads(adapted, xq, yq, "mse")]

    rows["1st-order step", "hand-batched bmm"] = median_time(hand_first_order, s)
    one = (xs[:1].contiguous(), ys[:1].contiguous())  # (1, K, 1): the device case, one task
    with torch.no_grad():
        rows["adapt, one task", "fused"] = median_time(lambda: ops.inner_loop(params, *one, steps=steps, lr=lr), s)
    rows["adapt, one task", "vmap(grad)"] = median_time(lambda: vm(detached, *one), s)
    if s.compile:
        rows["adapt, one task", "torch.compile(vmap)"] = time_compiled(compiled, "a1", vm, (detached, *one), s)
    notes = []
    if with_peers:
        peer_rows, notes = peers.sinusoid_rows(params, module, xs, ys, xq, yq, steps, lr, lambda f: median_time(f, s))
        rows |= peer_rows
    flops = {"adapt": adapt_flops(widths, t, k, steps), "adapt, one task": adapt_flops(widths, 1, k, steps)}
    flops["1st-order step"] = flops["adapt"] + adapt_flops(widths, t, k, 1)
    flops["2nd-order step"] = 3 * flops["adapt"] + adapt_flops(widths, t, k, 1)  # forward + HVP reverse
    return rows, flops, notes


def fixed_cost(s: Settings) -> dict[str, float]:
    """The cost of a call apart from its arithmetic: the smallest problem (one task, one
    shot, a 1-1 layer, no step), through the public function and through the bare op."""
    params, x, y = [torch.ones(1, 1), torch.zeros(1)], torch.ones(1, 1, 1), torch.ones(1, 1, 1)
    args = (params, x, y, [], 0.01, 0, 0, 0, 0)
    timer = median_time(lambda: None, s)
    with torch.no_grad():
        costs = {"public ops.inner_loop": median_time(lambda: ops.inner_loop(params, x, y, steps=0, lr=0.01), s) - timer}
        if ops.backend() == "cpp":
            with torch._C._AutoDispatchBelowAutograd():
                costs["bare op (dispatch, checks, outputs)"] = median_time(
                    lambda: torch.ops.mtl_deploy.inner_loop(*args), s) - timer
    return costs


def case_b(s: Settings, compiled: dict):
    t, ways, shots, d, steps, lr = 32, 5, 5, 64, 10, 0.1
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(t, ways * shots, d, generator=gen)  # (T, 25, 64) support features
    y = torch.arange(ways).repeat_interleave(shots).expand(t, -1).contiguous()  # (T, 25)
    head, module = mlp_params([d, ways]), Mlp([d, ways])
    detached = [p.detach() for p in head]
    vm, _ = vmap_adapter(module, steps, lr, "cross_entropy")
    rows = {}
    with torch.no_grad():
        rows["adapt", "fused"] = median_time(
            lambda: ops.inner_loop(head, x, y, steps=steps, lr=lr, loss="cross_entropy"), s
        )
        rows["adapt", "hand-batched bmm"] = median_time(lambda: batched_adapt(head, x, y, steps, lr, "cross_entropy"), s)
    rows["adapt", "loop + autograd.grad"] = median_time(lambda: loop_adapt(head, x, y, steps, lr, "cross_entropy"), s)
    rows["adapt", "vmap(grad)"] = median_time(lambda: vm(detached, x, y), s)
    if s.compile:
        rows["adapt", "torch.compile(vmap)"] = time_compiled(compiled, "b", vm, (detached, x, y), s)
    return rows, {"adapt": adapt_flops([d, ways], t, ways * shots, steps)}


def time_compiled(compiled: dict, key: str, fn, args: tuple, s) -> float:
    """Median time of torch.compile(fn)(*args); the compile itself is timed once, apart,
    under compiled[key + " compile s"]."""
    if key not in compiled:
        start = time.perf_counter()
        compiled[key] = torch.compile(fn)
        compiled[key](*args)
        compiled[f"{key} compile s"] = time.perf_counter() - start
    return median_time(lambda: compiled[key](*args), s)


def routed_variants(x, w, b, ids):
    h = w.shape[0]

    def mask_loop():
        out = x.new_empty(x.shape[0], w.shape[1])
        for j in range(h):
            rows = ids == j
            out[rows] = F.linear(x[rows], w[j], b[j])
        return out

    def sort_segments():
        order = torch.argsort(ids)
        counts = torch.bincount(ids, minlength=h).tolist()
        parts = [F.linear(seg, w[j], b[j]) for j, seg in enumerate(x[order].split(counts)) if counts[j]]
        out = x.new_empty(x.shape[0], w.shape[1])
        out[order] = torch.cat(parts)
        return out

    return {
        "mask loop": mask_loop,
        "gather + bmm": lambda: torch.bmm(w[ids], x.unsqueeze(-1)).squeeze(-1) + b[ids],
        "sort + segment matmul": sort_segments,
        "all heads + gather": lambda: F.linear(x, w.view(-1, x.shape[1]), b.view(-1)).view(x.shape[0], h, -1)[
            torch.arange(x.shape[0]), ids
        ],
    }


def case_c(s: Settings):
    d, c = 256, 10
    all_rows, routed_rows = [], []
    for batch in (1, 64, 1024):
        for heads in (4, 16, 64):
            gen = torch.Generator().manual_seed(batch * heads)
            x = torch.randn(batch, d, generator=gen)  # (B, D)
            w, b = torch.randn(heads, c, d, generator=gen), torch.randn(heads, c, generator=gen)
            ids = torch.randint(0, heads, (batch,), generator=gen)  # (B,)
            linears = [torch.nn.Linear(d, c) for _ in range(heads)]
            with torch.no_grad():
                times = {
                    "fused": median_time(lambda: ops.multihead_linear(x, w, b), s),
                    "loop of Linear": median_time(lambda: torch.stack([m(x) for m in linears], 1), s),
                    "one concatenated Linear": median_time(lambda: F.linear(x, w.view(-1, d), b.view(-1)), s),
                }
                all_rows.append((batch, heads, times, 2 * batch * heads * c * d))
                times = {"fused": median_time(lambda: ops.multihead_linear(x, w, b, ids), s)}
                times |= {name: median_time(fn, s) for name, fn in routed_variants(x, w, b, ids).items()}
                routed_rows.append((batch, heads, times, 2 * batch * c * d))
    return all_rows, routed_rows


# ---- report ------------------------------------------------------------------


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} us"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mlp_table(name, rows, flops, rate):
    out = []
    for phase in dict.fromkeys(p for p, _ in rows):
        fused = rows[phase, "fused"]
        for (p, variant), sec in rows.items():
            if p == phase:
                speed = f"{sec / fused:.2f}x" if variant != "fused" else f"{flops[phase] / fused / 1e9:.1f} GFLOP/s (mm {rate:.0f})"
                out.append((name, phase, variant, fmt(sec), speed))
    return table(["case", "phase", "variant", "median", "fused speed-up / rate"], out)


def heads_table(rows, rate):
    variants = list(rows[0][2])
    out = []
    for batch, heads, times, flop in rows:
        best = min(v for k, v in times.items() if k != "fused")
        out.append((batch, heads, *(fmt(times[v]) for v in variants), f"{best / times['fused']:.2f}x",
                    f"{flop / times['fused'] / 1e9:.1f}"))
    return table(["B", "H", *variants, "best other / fused", f"fused GFLOP/s (mm {rate:.0f})"], out)


def targets(a, b, all_heads, routed, fixed, rate, training):
    """Every target of the fused kernels at 1 thread: what was measured, met or missed."""
    def ratio(phase, other, case=a):
        return case[phase, other] / case[phase, "fused"] if (phase, other) in case else None

    def check(name, value, bound, text=None):
        shown = text if text is not None else ("not run" if value is None else f"{value:.2f}x")
        return name, shown, "not run" if value is None else ("met" if value >= bound else "**missed**")

    gflops = a["flops"]["adapt"] / a["adapt", "fused"] / 1e9
    one = a["adapt, one task", "fused"]
    worst_routed = min(min(v for k, v in t.items() if k != "fused") / t["fused"] for _, _, t, _ in routed)
    worst_all = min(t["one concatenated Linear"] / t["fused"] for _, _, t, _ in all_heads)
    call = fixed["public ops.inner_loop"]
    checks = [
        check("A adaptation >= 2x faster than torch.compile(vmap)", ratio("adapt", "torch.compile(vmap)"), 2),
        check("A adaptation >= 50% of the matmul rate", gflops / rate, 0.5,
              f"{gflops:.1f} GFLOP/s = {gflops / rate:.0%} of {rate:.0f}"),
        check("one task: <= 20 us per adaptation", 20e-6 / one, 1, f"{one * 1e6:.1f} us"),
        check("one task >= 6x faster than torch.compile(vmap)", ratio("adapt, one task", "torch.compile(vmap)"), 6),
        check("A 2nd-order step >= 10x faster than vmap", ratio("2nd-order step", "vmap(grad)"), 10),
        check("A 2nd-order step >= 4x faster than batched bmm + autograd",
              ratio("2nd-order step", "batched bmm + autograd"), 4),
        check("A 2nd-order step no slower than JAX jit", ratio("2nd-order step", "JAX jit(vmap(grad))"), 1),
        check("A 1st-order step >= 2x faster than hand-batched bmm", ratio("1st-order step", "hand-batched bmm"), 2),
        check("B ANIL adaptation >= 3x faster than torch.compile(vmap)", ratio("adapt", "torch.compile(vmap)", b), 3),
        check("routed >= 2x faster than best PyTorch, every cell", worst_routed, 2, f"worst cell {worst_routed:.2f}x"),
        check("all heads >= 0.95x one concatenated Linear, every cell", worst_all, 0.95, f"worst cell {worst_all:.2f}x"),
        check("fixed cost of a call <= 3 us", 3e-6 / call, 1, f"{call * 1e6:.1f} us"),
        check("meta-training end to end >= 3x the previous meta-step's tasks/s",
              None if training is None else training["tasks/s"] / training["previous tasks/s"], 3),
        check("meta-training end to end: <= 25% of step time outside the fused op",
              None if training is None else 0.25 / training["share outside the fused ops"], 1,
              None if training is None else f"{training['share outside the fused ops']:.0%} outside"),
    ]
    return table(["target (1 thread)", "measured", "verdict"], checks)


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"Machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}, "
            f"backend {ops.backend()}, load average {load:.1f} at start, "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, skip torch.compile, write nothing")
    parser.add_argument("--out", type=Path, default=None, help=f"markdown output (default {RESULTS.name}, none with --quick)")
    args = parser.parse_args(argv)
    s = Settings(repeats=3, budget=0.05, compile=False) if args.quick else Settings(repeats=200, budget=2.0, compile=True)
    out = args.out or (None if args.quick else RESULTS)
    sections, compiled, first = [machine_line()], {}, {}
    print(sections[0])
    for threads in (1, 2):
        torch.set_num_threads(threads)
        rate = matmul_gflops(s)
        a, a_flops, notes = case_a(s, compiled, with_peers=threads == 1 and s.compile)
        b, b_flops = case_b(s, compiled)
        all_heads, routed = case_c(s)
        fixed = fixed_cost(s)
        if threads == 1:
            training = meta_training.sinusoid_maml_rate() if s.compile else None
            first = dict(a=a | {"flops": a_flops}, b=b, all_heads=all_heads, routed=routed, fixed=fixed, rate=rate,
                         training=training)
        parts = [
            f"## {threads} thread{'s' if threads > 1 else ''} (512x512 float32 matmul: {rate:.0f} GFLOP/s)",
            "### A: sinusoid MAML (MLP 1-40-40-1, T=25, K=10, 5 steps) and B: ANIL head (64-d, 5-way 5-shot, T=32, 10 steps)",
            mlp_table("A", a, a_flops, rate) + "\n" + "\n".join(mlp_table("B", b, b_flops, rate).splitlines()[2:]),
            "### C: every head, x (B, 256) through H heads of 10 outputs",
            heads_table(all_heads, rate),
            "### C: routed rows, each row through its own head",
            heads_table(routed, rate),
            "### Fixed cost of an inner_loop call (smallest problem, no step; timer overhead subtracted)",
            table(["path", "median"], [(k, fmt(v)) for k, v in fixed.items()]),
            *notes,
            *([f"### Meta-training end to end (`sinusoid-maml`, 300 outer steps of 25 tasks)\n\n"
               f"{training['tasks/s']:.0f} tasks/s with `ops.maml_step`, {training['previous tasks/s']:.0f} tasks/s "
               f"with the previous meta-step (inner_loop + autograd); {training['share outside the fused ops']:.0%} "
               "of profiled step time outside the fused ops"] if threads == 1 and training else []),
        ]
        for part in parts:
            print(part + "\n")
        sections += parts
    if "a compile s" in compiled:
        note = f"torch.compile time (not in the medians): case A {compiled['a compile s']:.1f} s, case B {compiled['b compile s']:.1f} s."
        print(note)
        sections.append(note)
    sections += ["## Targets", targets(**first)]
    print("\n\n".join(sections[-2:]))
    if out:
        out.write_text("# Fused kernel benchmarks\n\n" + "\n\n".join(sections) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
