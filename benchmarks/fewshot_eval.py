"""Few-shot evaluation tables of the shipped meta-learning presets: meta-train each preset,
then evaluate on 600 held-out episodes (mean ± 95% CI, median, diverged tasks) next to the
pretrained and from-scratch baselines. Prints markdown; the README quotes its output.

For classification it also prints each meta-learner against the from-scratch baseline as
a paired difference over the same episodes (mean ± 95% CI).

Omniglot presets (`omniglot-*`) are measured on the one-shot runs of Lake et al. (2015)
instead, by `omniglot_eval.py` beside this script, and their table comes first.

Usage: python benchmarks/fewshot_eval.py [--episodes 600] [--seeds 3] [--presets a,b,...] [--translate N]
       [--omniglot DIR] [--ablations]
"""

import argparse
import time
from pathlib import Path

import omniglot_eval

from mtl_deploy.config import resolve_config
from mtl_deploy.meta.evaluate import evaluate_fewshot, paired_difference
from mtl_deploy.meta.train import family_of, meta_train

SINUSOID = ["sinusoid-maml", "sinusoid-fomaml", "sinusoid-metasgd", "sinusoid-reptile"]
DIGITS = ["digits-protonet", "digits-matching", "digits-maml", "digits-anil"]


COLUMNS = ("0", "1", "10", "100")  # step counts; a metric learner's single result goes under "100"


def pivot(rows):
    """(preset, shots, method) -> {step column: "mean ± ci (median m, d diverged)"}."""
    table = {}
    for name, shots, r in rows:
        column = "100" if r.steps == "-" else r.steps
        table.setdefault((name, shots, r.method), {})[column] = (
            f"{r.mean:.3f} ± {r.ci95:.3f} (median {r.median:.3f}, {r.diverged} diverged)")
    return table


def against_scratch(name, shots, meta, rows):
    """(preset, shots, method, its result, scratch's, paired difference, verdict): the
    meta-learner after its default adaptation steps against training from scratch."""
    learned = next(r for r in rows if r.method == meta.algorithm and r.steps in ("-", str(meta.adapt_steps)))
    scratch = next(r for r in rows if r.method == "scratch")
    difference, ci = paired_difference(learned, scratch)
    verdict = "above" if difference - ci > 0 else "below" if difference + ci < 0 else "level (CI spans 0)"
    return (name, shots, f"{meta.algorithm} ({learned.steps} steps)" if learned.steps != "-" else meta.algorithm,
            f"{learned.mean:.3f} ± {learned.ci95:.3f}", f"{scratch.mean:.3f} ± {scratch.ci95:.3f}",
            f"{difference:+.3f} ± {ci:.3f}", verdict)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seeds", type=int, default=3, help="seeds for sinusoid-maml (others use seed 0)")
    parser.add_argument("--presets", default=",".join(omniglot_eval.PRESETS + SINUSOID + DIGITS))
    parser.add_argument("--omniglot", type=Path, default=omniglot_eval.DATA, help="folder of the Omniglot zips")
    parser.add_argument("--ablations", action="store_true", help="omniglot presets: also each learner option")
    parser.add_argument("--translate", type=int, default=None,
                        help="digits presets: pixels of random offset (0 = the digits as shipped; default: the preset's)")
    args = parser.parse_args()
    timings, tables, comparisons = [], {}, []
    presets = args.presets.split(",")
    omniglot = [p for p in presets if p.startswith("omniglot")]
    if omniglot:
        omniglot_eval.print_tables(omniglot, args.omniglot, args.ablations)
    for preset in (p for p in presets if p not in omniglot):
        seeds = range(args.seeds) if preset == "sinusoid-maml" else [0]
        for seed in seeds:
            translate = args.translate if preset.startswith("digits") else None
            config = resolve_config(preset=preset, overrides={"meta.seed": seed, "meta.translate": translate})
            start = time.perf_counter()
            fitted = meta_train(config, progress=False)
            timings.append((preset, seed, time.perf_counter() - start))
            print(f"{preset} seed {seed}: meta-training {timings[-1][2]:.1f} s", flush=True)
            for shots in ((10, 5) if preset.startswith("sinusoid") else (1, 5)):
                config.meta.shots = shots
                rows = evaluate_fewshot(fitted.model, family_of(config.meta), config.meta, args.episodes)
                name = f"{preset} (seed {seed})" if len(seeds) > 1 else preset
                tables.setdefault(preset.split("-")[0], []).extend((name, shots, row) for row in rows)
                if rows[0].metric == "accuracy":
                    comparisons.append(against_scratch(name, shots, config.meta, rows))
    for family, rows in tables.items():
        print(f"\n### {family}, {args.episodes} held-out episodes: {rows[0][2].metric}, "
              "mean ± 95% CI (median, diverged tasks)\n")
        print("| preset | shots | method | 0 steps | 1 step | 10 steps | 100 steps / metric |")
        print("|---|---|---|---|---|---|---|")
        for (name, shots, method), cells in pivot(rows).items():
            print(f"| {name} | {shots} | {method} | " + " | ".join(cells.get(c, "") for c in COLUMNS) + " |")
    if comparisons:
        print("\n### against training from scratch, paired over the same episodes\n")
        print("| preset | shots | method | accuracy | scratch | difference (95% CI) | verdict |\n|---|---|---|---|---|---|---|")
        for row in comparisons:
            print("| " + " | ".join(str(cell) for cell in row) + " |")
    if timings:
        print("\n| preset | seed | meta-training wall time (s) |\n|---|---|---|")
    for preset, seed, seconds in timings:
        print(f"| {preset} | {seed} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
