"""The Omniglot table: meta-train each omniglot preset on the two minimal background sets,
then run the 20 one-shot runs of Lake et al. (2015), beside the MHD and pixel baselines
computed on the same runs, each preset's network pretrained then fine-tuned and trained
from scratch on the same runs (paired margins), and the published figures (quoted, not
measured). With
--ablations, each learner option is switched off (or on) in its preset and the change in
meta-validation accuracy (held-out background alphabets, 200 episodes of 20-way one-shot,
the same for every variant) and in 20-run error is printed. With --adapters, each preset's
adapter export also runs the 20 runs in ONNX Runtime. Prints markdown; the README quotes
its output. Wall times are of meta-training alone, with the machine's load average.

Usage: python benchmarks/omniglot_eval.py [--data ../shared/omniglot] [--presets a,b] [--ablations] [--adapters]
       [--set meta.iterations=900]
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import mtl_deploy

from mtl_deploy.config import resolve_config
from mtl_deploy.errors import InputError
from mtl_deploy.meta.evaluate import evaluate_fewshot, paired_difference
from mtl_deploy.meta.omniglot_runs import ADAPTER, evaluate_omniglot_runs
from mtl_deploy.meta.train import meta_train

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "omniglot"
PRESETS = ["omniglot-protonet", "omniglot-matching", "omniglot-maml", "omniglot-anil"]
# (preset, key, value): the preset with one option changed, against the preset as shipped
ABLATIONS = [("omniglot-protonet", "meta.learned_scale", True), ("omniglot-protonet", "meta.train_ways", 20),
             ("omniglot-matching", "meta.learned_scale", False), ("omniglot-anil", "meta.proto_init", False),
             ("omniglot-anil", "meta.head_lr", 0.01), ("omniglot-maml", "meta.proto_init", False),
             ("omniglot-maml", "meta.head_lr", 0.01)]
QUOTED = [("people (Lake et al., 2015, quoted)", "4.5"), ("Bayesian Program Learning (Lake et al., 2015, quoted)", "3.3"),
          ("Lake et al. (2015): MHD, as published (quoted)", "38.8")]


def measure(preset: str, data: Path, overrides: dict, baselines: bool = False, adapter: bool = False) -> dict:
    """Meta-train, then the meta-validation accuracy and the 20 runs (with the MHD and
    pixel baselines on them, and through the adapter export in ONNX Runtime, when asked)."""
    config = resolve_config(preset=preset, overrides={"meta.path": str(data), **overrides})
    load = os.getloadavg()[0]
    start = time.perf_counter()
    fitted = meta_train(config, progress=False)
    seconds = time.perf_counter() - start
    meta = config.meta
    steps = (0,) if meta.algorithm in ("protonet", "matching") else (meta.adapt_steps,)
    val = evaluate_fewshot(fitted.model, fitted.family, meta, 200, steps, baselines=False, split="val")[0]
    with tempfile.TemporaryDirectory() as scratch:
        exported = None
        if adapter:
            try:
                mtl_deploy.export(fitted.model, Path(scratch) / "adapter", format="adapter")
                exported = Path(scratch) / "adapter"
            except InputError as err:  # MAML adapting a whole ConvNet has no adapter graph
                print(f"{preset}: no adapter export ({err})", flush=True)
        runs = evaluate_omniglot_runs(fitted.model, data / "all_runs.zip", baselines,
                                      fitted.family if baselines else None, meta, adapter=exported)
    print(f"{preset} {overrides or ''}: {seconds:.0f} s, load {load:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
    return {"seconds": seconds, "load": (load, os.getloadavg()[0]), "val": val, "runs": runs,
            "algorithm": meta.algorithm}


def runs_cell(result: dict, method: str) -> str:
    mean, ci = result["runs"].summary(method)
    return f"{mean:.2f} ± {ci:.2f}"


def print_tables(presets: list[str], data: Path, ablations: bool, adapters: bool = False,
                 overrides: dict | None = None) -> None:
    """Train and measure `presets` (with `overrides`, config key -> value, e.g. another step
    count), print the runs table (and the ablation and adapter tables)."""
    shipped = {preset: measure(preset, data, overrides or {}, baselines=True, adapter=adapters) for preset in presets}
    first = next(iter(shipped.values()))
    print("\n### 20-way one-shot, the 20 runs of Lake et al. (2015): error %, mean ± 95% CI over runs\n")
    print("| method | error % | meta-validation accuracy | meta-training wall time (s), load average |\n"
          "|---|---|---|---|")
    for preset, result in shipped.items():
        load = "{:.1f} -> {:.1f}".format(*result["load"])
        val = result["val"]
        print(f"| {preset} | {runs_cell(result, result['algorithm'])} | {val.mean:.3f} ± {val.ci95:.3f} | "
              f"{result['seconds']:.0f}, {load} |")
    print(f"| Modified Hausdorff Distance (this project) | {runs_cell(first, 'mhd')} | - | - |")
    print(f"| pixel nearest neighbour, 28x28 (this project) | {runs_cell(first, 'pixels')} | - | - |")
    for name, error in QUOTED:
        print(f"| {name} | {error} | - | not measured here |")
    print("\n### each preset against the learned baselines on the same 20 runs, same network: pretrained on the "
          "meta-training classes then head fine-tuned, and trained from scratch on the run's 20 drawings\n")
    print("| preset | pretrained + fine-tuned error % | from scratch error % | points saved vs pretrained (paired, "
          "95% CI) | points saved vs scratch (paired, 95% CI) |\n|---|---|---|---|---|")
    for preset, result in shipped.items():
        runs, own = result["runs"], result["algorithm"]
        saved = ["{:+.2f} ± {:.2f}".format(*runs.paired(own, b)) for b in ("pretrained", "scratch")]
        print(f"| {preset} | {runs_cell(result, 'pretrained')} | {runs_cell(result, 'scratch')} | {saved[0]} | "
              f"{saved[1]} |", flush=True)
    if adapters:
        print("\n### the 20 runs through each preset's adapter export in ONNX Runtime (adapt.onnx, then "
              "predict.onnx)\n")
        print("| preset | PyTorch error % | ONNX Runtime adapter error % | largest logit difference |\n|---|---|---|---|")
        for preset, result in shipped.items():
            difference = result["runs"].adapter_max_abs_diff
            cells = ("no adapter graph", "-") if difference is None else (runs_cell(result, ADAPTER), f"{difference:.2e}")
            print(f"| {preset} | {runs_cell(result, result['algorithm'])} | {cells[0]} | {cells[1]} |", flush=True)
    if ablations:
        print("\n### each learner option against its preset (meta-validation: 200 episodes of 20-way one-shot "
              "on the held-out background alphabets)\n")
        print("| preset | changed to | val accuracy, preset | val accuracy, changed | preset - changed (paired, "
              "95% CI) | 20-run error %, changed | wall time (s) |\n|---|---|---|---|---|---|---|")
        for preset, key, value in (a for a in ABLATIONS if a[0] in shipped):
            variant = measure(preset, data, {key: value})
            base, changed = shipped[preset]["val"], variant["val"]
            gain, ci = paired_difference(base, changed)
            print(f"| {preset} | {key} = {value} | {base.mean:.3f} ± {base.ci95:.3f} | {changed.mean:.3f} ± "
                  f"{changed.ci95:.3f} | {gain:+.3f} ± {ci:.3f} | {runs_cell(variant, variant['algorithm'])} | "
                  f"{variant['seconds']:.0f} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--ablations", action="store_true", help="also each option of these presets against the preset")
    parser.add_argument("--adapters", action="store_true", help="also the runs through each preset's adapter export")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every preset, e.g. meta.iterations=900 (repeatable)")
    args = parser.parse_args()
    overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    print_tables(args.presets.split(","), args.data, args.ablations, args.adapters, overrides)


if __name__ == "__main__":
    main()
