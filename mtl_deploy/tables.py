"""Plain-text tables for what the commands print: parity reports, metrics, latency."""

from __future__ import annotations

from mtl_deploy.ops import backend


def table(headers: list[str], rows: list[list]) -> str:
    """A left-aligned text table; floats are printed with 4 significant digits."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def parity_table(report) -> str:
    """A ParityReport as printed by export and verify."""
    rows = [[name, o.max_abs_error, o.max_rel_error, "pass" if o.passed else "FAIL"]
            for name, o in report.outputs.items()]
    head = (f"parity vs {report.against} in {', '.join(report.runtimes)}; batches {report.batch_sizes}; "
            f"{' + '.join(report.inputs)} inputs; atol {report.atol:g}, rtol {report.rtol:g}")
    by_runtime = report.runtime_max_abs_error
    tail = ("\nmax abs err by runtime: " + ", ".join(f"{name} {error:.3g}" for name, error in by_runtime.items())
            if len(by_runtime) > 1 else "")
    return head + "\n" + table(["output", "max abs err", "max rel err", "result"], rows) + tail


def latency_table(rows: list[dict]) -> str:
    body = [[r["batch"], r["onnxruntime_ms"], r["pytorch_ms"], r["pytorch_ms"] / r["onnxruntime_ms"]] for r in rows]
    return table(["batch", "onnxruntime ms", "pytorch eager ms", "speed-up"], body)


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    rows = [[task, ", ".join(f"{k} {v:.4g}" for k, v in values.items())] for task, values in metrics.items()]
    return table(["task", "validation metrics"], rows)


def training_summary(fitted) -> str:
    """What `train` prints: validation metrics (multi-task) or validation loss (meta)."""
    if hasattr(fitted, "result"):
        result = fitted.result
        return metrics_table(result.val_metrics) + f"\nbest epoch {result.best_epoch} of {result.epochs_run}"
    return (f"best meta-validation query loss {fitted.val_loss:.4g} at step {fitted.best_iteration}; "
            f"meta-training took {fitted.seconds:.1f} s (inner loop: {backend()} backend)")


def adaptation_summary(adapted) -> str:
    """What `adapt` prints: the support loss before and after adapting."""
    loss = "mse" if adapted.model.task.kind == "regression" else "cross-entropy"
    if adapted.loss_before != adapted.loss_before:  # NaN: a metric model has no loss before its support set
        return f"support loss ({loss}) after adapting: {adapted.loss_after:.4g}"
    return f"support loss ({loss}): {adapted.loss_before:.4g} before adapting, {adapted.loss_after:.4g} after"


def evaluation_table(rows) -> str:
    """The evaluate command's table. With a scratch baseline among the rows, every row also
    gets its paired difference from scratch over the same episodes: whether meta-learning paid."""
    from mtl_deploy.meta.evaluate import paired_difference

    scratch = next((r for r in rows if r.method == "scratch"), None)

    def versus_scratch(row) -> str:
        if scratch is None or row is scratch:
            return ""
        difference, ci = paired_difference(row, scratch)
        return f"{difference:+.4f} ± {ci:.4f}"

    body = [[r.method, r.steps, r.metric, r.mean, r.ci95, r.median, r.diverged, r.episodes, versus_scratch(r)]
            for r in rows]
    text = table(["method", "steps", "metric", "mean", "±95% CI", "median", "diverged", "episodes",
                  "vs scratch (paired)"], body)
    if scratch is None:
        return text
    better = "lower" if scratch.metric in ("mse", "mae", "loss") else "higher"
    return (text + f"\nvs scratch (paired): this method's {scratch.metric} minus scratch's on the same episodes, "
            f"± its 95% CI; {better} {scratch.metric} is better, so "
            f"{'a negative' if better == 'lower' else 'a positive'} difference means the method beats scratch")


def int8_table(report: dict) -> str:
    """The int8 section of an export manifest, as printed by export --quantize int8."""
    size = report["bytes"]
    latency = report["latency_ms_batch64_1thread"]
    head = (f"int8: {report['artifact']} is {report['size_ratio']:.0%} of float32 ({size['int8']} vs {size['float32']} "
            f"bytes); batch 64, 1 thread: {latency['int8']:.4g} ms vs {latency['float32']:.4g} ms")
    rows = [[name, change] for name, change in report["output_change"].items()]
    return head + "\n" + table(["output", "change vs float32"], rows)


def omniglot_runs_table(result) -> str:
    """What evaluate --omniglot-runs prints: percent error of each run and method, then the
    mean ± 95% CI over runs (MHD: the authors' baseline, pixels: nearest neighbour)."""
    methods = list(result.errors)
    rows = [[run, *(f"{result.errors[m][i]:.1f}" for m in methods)] for i, run in enumerate(result.runs)]
    rows.append(["mean ± 95% CI", *("{:.2f} ± {:.2f}".format(*result.summary(m)) for m in methods)])
    text = (f"20-way one-shot classification, {len(result.runs)} runs of Lake et al. (2015): error %\n"
            + table(["run", *methods], rows))
    learned = [b for b in ("pretrained", "scratch") if b in result.errors]
    if learned:  # the model's own column is the first
        pairs = [[f"{b} - {methods[0]}", "{:.2f} ± {:.2f}".format(*result.paired(methods[0], b))] for b in learned]
        text += "\n\npoints of error saved, paired over runs (mean ± 95% CI)\n" + table(["baseline", "saved"], pairs)
    if result.adapter_max_abs_diff is not None:
        text += f"\n\nadapter export vs PyTorch: largest logit difference {result.adapter_max_abs_diff:.3g}"
    return text
