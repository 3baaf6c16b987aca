"""Few-shot adaptation through the exported adapter graph in ONNX Runtime vs. in PyTorch
(`mtl_deploy.adapt` + forward): the same held-out tasks, the query metric from both, the
largest prediction difference, and the median latency of one adapt-and-predict per task.

Usage: python benchmarks/adapter_eval.py [--presets sinusoid-maml,digits-protonet,digits-anil]
                                        [--iterations N] [--tasks 600]
"""

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

import mtl_deploy
from mtl_deploy.config import resolve_config
from mtl_deploy.exporters.latency import median_ms
from mtl_deploy.meta.train import meta_train_and_save
from mtl_deploy.runtime import Predictor


def metric(kind, pred, y):
    return float(((pred - y) ** 2).mean()) if kind == "regression" else float((pred.argmax(1) == y).mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", default="sinusoid-maml,digits-protonet,digits-anil")
    parser.add_argument("--iterations", type=int, default=None, help="override meta.iterations (default: preset's)")
    parser.add_argument("--tasks", type=int, default=600)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| preset | episode | tasks | PyTorch query metric | ONNX Runtime query metric | max abs prediction diff "
          "| PyTorch adapt+predict ms | ONNX Runtime adapt+predict ms |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        for preset in args.presets.split(","):
            config = resolve_config(preset=preset, overrides={"meta.iterations": args.iterations})
            fitted = meta_train_and_save(config, Path(root) / preset, progress=False)
            mtl_deploy.export(Path(root) / preset, Path(root) / f"{preset}-adapter", format="adapter")
            device = Predictor(Path(root) / f"{preset}-adapter", threads=1)
            model, kind = fitted.model, fitted.model.task.kind
            episodes = fitted.family.samplers["test"].sample(args.tasks, torch.Generator().manual_seed(99))
            torch_scores, onnx_scores, diff, torch_ms, onnx_ms = [], [], 0.0, [], []
            for t in range(args.tasks):
                sx, qx = episodes.support_x[t], episodes.query_x[t]
                sy, qy = episodes.support_y[t], episodes.query_y[t].numpy()

                def pytorch():
                    with torch.no_grad():
                        return mtl_deploy.adapt(model, sx, sy)(qx)[model.task.name].numpy()

                def onnxruntime():
                    return device.adapt(sx.numpy(), sy.numpy()).predict(qx.numpy())

                want, got = pytorch(), onnxruntime()
                torch_scores.append(metric(kind, want, qy))
                onnx_scores.append(metric(kind, got, qy))
                diff = max(diff, float(np.abs(want - got).max()))
                if t < 50:
                    torch_ms.append(median_ms(pytorch, repeats=5, warmup=1))
                    onnx_ms.append(median_ms(onnxruntime, repeats=5, warmup=1))
            shape = (f"K={config.meta.shots}" if kind == "regression"
                     else f"{config.meta.ways}-way {config.meta.shots}-shot")
            name = "mse" if kind == "regression" else "accuracy"
            print(f"| {preset} | {shape} | {args.tasks} | {name} {np.mean(torch_scores):.4f} | "
                  f"{name} {np.mean(onnx_scores):.4f} | {diff:.2e} | {statistics.median(torch_ms):.3f} | "
                  f"{statistics.median(onnx_ms):.3f} |", flush=True)


if __name__ == "__main__":
    main()
