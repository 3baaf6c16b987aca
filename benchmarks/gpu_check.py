"""The GPU device check (`make gpu-check`), for a machine with a CUDA torch and nvcc.

1. Builds the extension in place against this machine's torch (CPU and CUDA kernels)
   and checks that the CUDA kernels are live.
2. Runs every `gpu`-marked test (the op tests on CUDA against the CPU references,
   CUDA training, ONNX Runtime's CUDA provider where it is installed).
3. Times the fused CUDA ops against a per-task loop, torch.func.vmap and
   torch.compile(vmap), with CUDA events (median of repeats after warm-up), at
   T = 25, 1,000 and 10,000 tasks, and routed heads at B = 65,536.

Writes results.md (machine line, tables, targets) and the build and test logs to --out.
Every step's outcome is written as soon as it is known, so a run cut short still
reports what it did.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Report:
    """results.md, rewritten after every addition."""

    def __init__(self, path: Path):
        self.path, self.lines = path, []

    def add(self, *lines: str) -> None:
        self.lines += lines
        print(*lines, sep="\n", flush=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("\n".join(self.lines) + "\n")
        tmp.replace(self.path)


def machine_line() -> str:
    import torch

    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True)
    gpu = smi.stdout.strip() or torch.cuda.get_device_name()
    return (f"{gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}); Python {platform.python_version()}; "
            f"{os.cpu_count()} CPU cores")


def build(out: Path, report: Report) -> bool:
    """setup.py build_ext --inplace, then a fresh process confirms the CUDA kernels load."""
    start = time.perf_counter()
    env = os.environ | {"MAX_JOBS": str(os.cpu_count() or 4)}
    with open(out / "build.log", "w") as log:
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=ROOT, stdout=log,
                       stderr=subprocess.STDOUT, env=env)
    probe = ("import torch; from mtl_deploy.ops import loader; "
             "assert loader.backend() == 'cpp', loader._failure; "
             "assert loader.runs_fused(torch.empty(0, device='cuda')), 'the build has no CUDA kernels'")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                          env=os.environ | {"MTL_DEPLOY_BACKEND": "cpp"})
    ok = done.returncode == 0
    report.add(f"- build: {'CUDA kernels live' if ok else 'FAILED'} ({time.perf_counter() - start:.0f} s; build.log)")
    if not ok:
        report.add("", "```", (done.stderr or done.stdout).strip()[-3000:], "```")
    return ok


def run_tests(out: Path, report: Report, paths: list[str]) -> None:
    start = time.perf_counter()
    with open(out / "tests.log", "w") as log:
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rfEs",
                        *paths], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                       env=os.environ | {"MTL_DEPLOY_BACKEND": "cpp"})
    text = (out / "tests.log").read_text().strip().splitlines()
    summary = text[-1] if text else "no output"
    failures = [line for line in text if line.startswith(("FAILED", "ERROR"))]
    report.add(f"- gpu tests: {summary} ({time.perf_counter() - start:.0f} s; tests.log)", *[f"  - {f}" for f in failures[:30]])


# ---- timing ----------------------------------------------------------------------


def cuda_seconds(fn, budget: float = 3.0, repeats: int = 30) -> float:
    """Median seconds of fn() between CUDA events, after 3 warm-up calls; at most
    `repeats` calls, stopping early once `budget` seconds were spent (3 calls at least)."""
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times, spent = [], 0.0
    while len(times) < repeats and (spent < budget or len(times) < 3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
        spent += times[-1]
    return statistics.median(times)


def attempt(fn) -> float | str:
    """The timing, or why it could not be taken (a variant that fails is reported, not fatal)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - any failure of a peer variant is a table entry
        return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"


def fmt(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return f"{value * 1e3:.3f} ms" if value >= 1e-3 else f"{value * 1e6:.1f} µs"


def ratio(times: dict, other: str) -> float | None:
    a, b = times.get(other), times.get("fused")
    return a / b if isinstance(a, float) and isinstance(b, float) else None


def sinusoid(t: int, device: str):
    import torch

    gen = torch.Generator().manual_seed(t)
    amp, phase = 0.1 + 4.9 * torch.rand(t, 1, 1, generator=gen), 3.14 * torch.rand(t, 1, 1, generator=gen)
    xs, xq = (10 * torch.rand(t, 10, 1, generator=gen) - 5 for _ in range(2))  # (T, K, 1)
    ys, yq = amp * torch.sin(xs + phase), amp * torch.sin(xq + phase)
    return [v.to(device) for v in (xs, ys, xq, yq)]


def bench(report: Report, quick: bool) -> None:
    import torch
    from torch.func import grad, vmap

    sys.path.insert(0, str(Path(__file__).parent))
    from run import Mlp, loop_adapt, mlp_params, routed_variants, vmap_adapter

    from mtl_deploy import ops
    from mtl_deploy.ops.reference import task_losses

    dev, steps, lr, widths = "cuda", 5, 0.01, [1, 40, 40, 1]
    params = [p.detach().to(dev).requires_grad_() for p in mlp_params(widths)]
    detached = [p.detach() for p in params]
    module = Mlp(widths).to(dev)
    budget = 1.0 if quick else 3.0
    rows, targets = [], []
    report.add("", "### Sinusoid MAML on the GPU (K=10, 5 steps, widths 1-40-40-1, float32)", "",
               "| case | T | variant | median | fused is faster by |", "|---|---|---|---|---|")

    def table(case, t, times):
        for name, value in times.items():
            r = ratio(times, name)
            line = f"| {case} | {t} | {name} | {fmt(value)} | {'' if name == 'fused' or r is None else f'{r:.1f}x'} |"
            report.add(line)
        rows.append((case, t, times))

    for t in (25, 1000, 10000):
        xs, ys, xq, yq = sinusoid(t, dev)
        vm, _ = vmap_adapter(module, steps, lr, "mse", order=1)
        times = {}
        with torch.no_grad():
            times["fused"] = attempt(lambda: cuda_seconds(lambda: ops.inner_loop(params, xs, ys, steps=steps, lr=lr),
                                                          budget))
        if t <= 1000:
            times["loop + autograd.grad"] = attempt(lambda: cuda_seconds(
                lambda: loop_adapt(params, xs, ys, steps, lr, "mse"), budget, repeats=5))
        times["vmap(grad)"] = attempt(lambda: cuda_seconds(lambda: vm(detached, xs, ys), budget))
        if not quick:
            compiled = torch.compile(vm)
            times["torch.compile(vmap)"] = attempt(lambda: cuda_seconds(lambda: compiled(detached, xs, ys), budget))
        table("adapt", t, times)
        if t == 1000:
            targets.append(("adaptation T=1,000 vs vmap", ratio(times, "vmap(grad)"), 20))
            targets.append(("adaptation T=1,000 vs torch.compile(vmap)", ratio(times, "torch.compile(vmap)"), 3))

    for t in (25, 1000):
        xs, ys, xq, yq = sinusoid(t, dev)
        adapt2, task_loss = vmap_adapter(module, steps, lr, "mse", order=2)

        def outer(theta):
            return vmap(task_loss, in_dims=(0, 0, 0))(adapt2(theta, xs, ys), xq, yq).mean()

        def loop_meta():
            adapted = loop_adapt(params, xs, ys, steps, lr, "mse", order=2)
            loss = task_losses(adapted, xq, yq, "mse", "relu").mean()
            return torch.autograd.grad(loss, params)

        times = {"fused": attempt(lambda: cuda_seconds(
            lambda: ops.maml_step(params, xs, ys, xq, yq, steps=steps, lr=lr, order=2), budget))}
        times["loop + autograd.grad"] = attempt(lambda: cuda_seconds(loop_meta, budget, repeats=5))
        times["vmap(grad)"] = attempt(lambda: cuda_seconds(lambda: grad(outer)(detached), budget))
        table("2nd-order meta-step", t, times)
        if t == 1000:
            targets.append(("2nd-order meta-step T=1,000 vs vmap", ratio(times, "vmap(grad)"), 10))

    report.add("", "### Routed heads on the GPU (D=256, C=10, float32)", "",
               "| B | H | variant | median | fused is faster by |", "|---|---|---|---|---|")
    for b, h in ((1024, 4), (1024, 64), (65536, 4), (65536, 64)):
        gen = torch.Generator().manual_seed(b + h)
        x = torch.randn(b, 256, generator=gen).to(dev)
        w, bias = torch.randn(h, 10, 256, generator=gen).to(dev), torch.randn(h, 10, generator=gen).to(dev)
        ids = torch.randint(0, h, (b,), generator=gen).to(dev)
        with torch.no_grad():
            times = {"fused": attempt(lambda: cuda_seconds(lambda: ops.multihead_linear(x, w, bias, ids), budget))}
            for name, fn in routed_variants(x, w, bias, ids).items():
                times[name] = attempt(lambda fn=fn: cuda_seconds(fn, budget))
        for name, value in times.items():
            r = ratio(times, name)
            report.add(f"| {b} | {h} | {name} | {fmt(value)} | {'' if name == 'fused' or r is None else f'{r:.1f}x'} |")
        if (b, h) == (65536, 64):
            best = min((v for k, v in times.items() if k != "fused" and isinstance(v, float)), default=None)
            fused = times["fused"]
            targets.append(("routed heads B=65,536 H=64 vs best PyTorch",
                            best / fused if best and isinstance(fused, float) else None, 2))

    report.add("", "### Targets", "", "| target | measured | bound | met |", "|---|---|---|---|")
    for name, value, bound in targets:
        shown = "not measured" if value is None else f"{value:.1f}x"
        met = "—" if value is None else ("yes" if value >= bound else "no")
        report.add(f"| {name} | {shown} | ≥ {bound}x | {met} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "gpu-check", help="folder for results.md and the logs")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and no torch.compile")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--tests", nargs="*", default=["tests"], help="test paths whose gpu tests run")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device is visible to this torch; nothing to check", file=sys.stderr)
        return 2
    report = Report(args.out / "results.md")
    report.add("# GPU check", "", f"Machine: {machine_line()}", "")
    if not args.skip_build and not build(args.out, report):
        return 1
    if not args.skip_tests:
        run_tests(args.out, report, args.tests)
    bench(report, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
