"""What wrapping a user's network costs (`make bench`): a wrapped model against the same
network with plain `nn.Linear` heads, same weights and inputs, in PyTorch eager and in ONNX
Runtime (our export against `torch.onnx.export` of the bare module). One thread each,
medians of interleaved rounds, in one process. Usage: python benchmarks/wrapped_overhead.py [--quick]"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

import mtl_deploy
from mtl_deploy import TaskSpec
from mtl_deploy.timing import median_seconds

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from my_networks import ImageEncoder, text_encoder  # noqa: E402

TASKS = [TaskSpec("score", "regression"), TaskSpec("topic", "multiclass", 4), TaskSpec("spam", "binary")]


class BareHeads(nn.Module):
    """The hand-written equivalent: the network, its features, one nn.Linear per task."""

    def __init__(self, wrapped, cls: bool):
        super().__init__()
        self.net, self.cls = wrapped.trunk.module, cls
        self.heads = nn.ModuleList()
        for task in TASKS:
            stack = next(s for s in wrapped.heads.stacks.values() if task.name in s.names)
            row = stack.names.index(task.name)
            linear = nn.Linear(stack.weight.shape[2], stack.weight.shape[1])
            linear.weight.data.copy_(stack.weight[row]), linear.bias.data.copy_(stack.bias[row])
            self.heads.append(linear)

    def forward(self, *inputs):
        if self.cls:
            features = self.net(input_ids=inputs[0], attention_mask=inputs[1]).last_hidden_state[:, 0]
        else:
            features = self.net(inputs[0])
        return tuple(head(features) for head in self.heads)


def interleaved(a, b, rounds: int, repeats: int) -> tuple[float, float]:
    """Medians over rounds of A then B, each round a median of `repeats` calls."""
    times_a, times_b = [], []
    for _ in range(rounds):
        times_a.append(median_seconds(a, repeats, warmup=3))
        times_b.append(median_seconds(b, repeats, warmup=3))
    return statistics.median(times_a), statistics.median(times_b)


def bare_onnx(bare: nn.Module, example: tuple, names: list[str], axes: list[dict], path: Path) -> None:
    dims = {"batch": torch.export.Dim("batch"), "sequence": torch.export.Dim("sequence", max=128)}
    shapes = tuple({axis: dims[name] for axis, name in spec.items()} for spec in axes)
    torch.onnx.export(bare.eval(), example, str(path), dynamo=True, input_names=names,
                      output_names=[t.name for t in TASKS], dynamic_shapes=(shapes,), verbose=False)


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def case(name: str, network: nn.Module, inputs: dict, cls: bool, rounds: int, repeats: int, work: Path) -> list:
    torch.manual_seed(0)
    example = {k: v[:1].repeat(2, *[1] * (v.dim() - 1)) for k, v in inputs.items()}  # 2 rows, whatever the batch
    wrapped = mtl_deploy.wrap(network, TASKS, example_inputs=example if cls else example["x"],
                              pooling="cls" if cls else "auto").eval()
    bare = BareHeads(wrapped, cls).eval()
    ordered = list(inputs.values())
    packed = inputs if cls else inputs["x"]
    with torch.inference_mode():
        want, got = bare(*ordered), wrapped(packed)
        assert all(torch.allclose(w, got[t.name], atol=1e-5) for w, t in zip(want, TASKS)), "not the same model"
        eager = interleaved(lambda: wrapped(packed), lambda: bare(*ordered), rounds, repeats)
    mtl_deploy.export(wrapped, work / f"{name}-wrapped", batch_sizes=[1, 3])
    axes = [{0: "batch", 1: "sequence"}] * 2 if cls else [{0: "batch"}]
    bare_onnx(bare, tuple(example.values()), list(inputs), axes, work / f"{name}-bare.onnx")
    feeds = {k: v.numpy() for k, v in inputs.items()}
    ours, theirs = session(work / f"{name}-wrapped" / "model.onnx"), session(work / f"{name}-bare.onnx")
    np.testing.assert_allclose(ours.run(None, feeds)[1], theirs.run(None, feeds)[1], atol=1e-5)
    onnx = interleaved(lambda: ours.run(None, feeds), lambda: theirs.run(None, feeds), rounds, repeats)
    rows = len(next(iter(inputs.values())))
    return [[name, rows, "PyTorch eager", eager[0] * 1e3, eager[1] * 1e3, eager[0] / eager[1] - 1],
            [name, rows, "ONNX Runtime", onnx[0] * 1e3, onnx[1] * 1e3, onnx[0] / onnx[1] - 1]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke run, not a measurement")
    args = parser.parse_args(argv)
    rounds, repeats = (3, 5) if args.quick else (15, 30)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for batch in (1, 32):
            text = {"input_ids": torch.randint(0, 1000, (batch, 32), generator=gen),
                    "attention_mask": torch.ones(batch, 32, dtype=torch.int64)}
            image = {"x": torch.randn(batch, 1, 16, 16, generator=gen)}
            print(f"batch {batch} ...", file=sys.stderr, flush=True)
            rows += case("BERT 2x64, 32 tokens", text_encoder(), text, True, rounds, repeats, Path(work))
            rows += case("ConvNet 16 ch, 16x16", ImageEncoder(), image, False, rounds, repeats, Path(work))
    print("| network | batch | runtime | wrapped (ms) | bare trunk + nn.Linear heads (ms) | wrapping costs |")
    print("|---|---|---|---|---|---|")
    for name, batch, runtime, ours, theirs, cost in rows:
        print(f"| {name} | {batch} | {runtime} | {ours:.3f} | {theirs:.3f} | {cost:+.1%} |")
    worst = max(r[5] for r in rows)
    print(f"\nworst: {worst:+.1%} (target: at most +5%)" + ("" if worst <= 0.05 else " - MISSED"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
