"""The `mtl-deploy` command line: each command parses its options and calls the library.

Errors the user can fix print one line on stderr and exit 2 (bad input) or 1 (failure);
Ctrl-C exits 130 with any previous artifact left intact.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from mtl_deploy.errors import COMMAND_ERRORS, INTERRUPTED, InputError, command_error
from mtl_deploy.runtime.cli import DEVICE_HELP, PREDICT_HELP
from mtl_deploy.trust import trusting

EXPORT_EXTRA = ("onnx", "onnxruntime", "onnxscript", "onnx_ir")
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train multi-task models, export them to ONNX with proved parity, verify and inspect them.")


TrustOption = Annotated[list[str], typer.Option(
    "--trust", help="Top-level package whose model factory a checkpoint may import (repeatable; also MTL_DEPLOY_TRUST).")]
RuntimesOption = Annotated[Optional[str], typer.Option(
    help="Comma-separated runtimes to prove parity in (ONNX formats): onnxruntime, reference, openvino (at f32), "
         "tract (pinned shapes) [default: onnxruntime,reference].")]


@contextlib.contextmanager
def user_errors(interrupted: str = INTERRUPTED, trust: list[str] | None = None):
    """Turn library errors into one line on stderr and the matching exit code; within it,
    checkpoints may import factories from the `trust`ed packages."""
    try:
        with trusting(trust or ()):
            yield
    except COMMAND_ERRORS as err:
        line, code = command_error(err, interrupted)
        typer.echo(line, err=True)
        raise typer.Exit(code) from None
    except ModuleNotFoundError as err:
        if err.name not in EXPORT_EXTRA:
            raise
        typer.echo(f"error: {err.name} is not installed; install the export extra: pip install 'mtl-deploy[export]'",
                   err=True)
        raise typer.Exit(1) from None


def _progress() -> bool:
    return sys.stderr.isatty()


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Argument(help="JSON run config (sections data, model, train; or meta, model).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Run directory to write: checkpoint, config, metrics log, curves.")] = Path("checkpoint"),
    preset: Annotated[Optional[str], typer.Option(help="A shipped config instead of CONFIG, e.g. synthetic-related or sinusoid-maml.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Data file (.csv or .npz) overriding data.path; for a meta-learning run, meta.path (e.g. the folder of the Omniglot zips).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Override train.epochs (multi-task runs).")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="Override meta.iterations (meta-learning runs).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override the run's seed.")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="Steps between saved training states.")] = None,
    device: Annotated[Optional[str], typer.Option(help="Where to train: cpu, cuda, cuda:N or auto (cuda when there is a GPU); overrides train.device / meta.device, e.g. --device cuda.")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this directory from its last saved state.")] = None,
    trust: TrustOption = [],
):
    """Train a multi-task model or meta-train a few-shot model, and write a checkpoint.
    Under torchrun, every process runs this command and takes its share of each batch.

    Example: mtl-deploy train --preset synthetic-related --out runs/ckpt
    """
    out = resume if resume is not None and out == Path("checkpoint") else out
    with user_errors(interrupted=f"interrupted: {out} is intact; continue with --resume {out}", trust=trust):
        if resume is not None and resume != out:
            raise InputError(f"--resume {resume} and --out {out} differ; a run resumes in its own directory")
        from mtl_deploy import training
        from mtl_deploy.config import overrides_from_flags
        from mtl_deploy.runs.distributed import from_environment
        from mtl_deploy.tables import training_summary
        overrides = overrides_from_flags(data=data, epochs=epochs, iterations=iterations, seed=seed,
                                         checkpoint_every=checkpoint_every, device=device)
        run = training.run_config(config, preset, overrides, out, resume is not None)
        fitted = training.train(run, out, _progress(), resume is not None)
        if from_environment().is_main:  # the process group the run joined
            typer.echo(training_summary(fitted))
            typer.echo(f"checkpoint: {out}")


@app.command()
def adapt(
    checkpoint: Annotated[Path, typer.Argument(help="Meta-trained checkpoint directory.")],
    support: Annotated[Path, typer.Option(help=".npz with arrays x (K, ...) and y (K,) class ids or (K, out) values; or an .npy of x with --support-y.")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint directory for the adapted model.")] = Path("adapted"),
    steps: Annotated[Optional[int], typer.Option(min=0, help="Adaptation steps (default: the model's).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Inner learning rate (default: the model's).")] = None,
    support_y: Annotated[Optional[Path], typer.Option(help=".npy of the support labels or targets, when --support is an .npy of x.")] = None,
    trust: TrustOption = [],
):
    """Adapt a meta-trained model to the task a support set shows; the result exports like any model.

    Example: mtl-deploy adapt runs/maml --support support.npz --out runs/adapted
    """
    with user_errors(trust=trust):
        from mtl_deploy.meta.adapt import adapt_checkpoint
        from mtl_deploy.tables import adaptation_summary
        typer.echo(adaptation_summary(adapt_checkpoint(checkpoint, support, out, steps=steps, lr=lr,
                                                       support_y=support_y)))
        typer.echo(f"adapted checkpoint: {out}")


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="Meta-trained checkpoint directory.")],
    episodes: Annotated[int, typer.Option(help="Held-out episodes (the literature uses 600).")] = 600,
    steps: Annotated[str, typer.Option(help="Comma-separated adaptation step counts.")] = "0,1,10",
    shots: Annotated[Optional[int], typer.Option(help="Shots per class or task (default: as trained).")] = None,
    baselines: Annotated[bool, typer.Option(help="Also evaluate the pretrained and from-scratch baselines.")] = True,
    omniglot_runs: Annotated[Optional[Path], typer.Option(help="Instead: the 20 one-shot runs of Lake et al. (2015), all_runs.zip or its folder; per-run error, mean ± 95% CI, and the MHD and pixel baselines.")] = None,
    adapter: Annotated[Optional[Path], typer.Option(help="With --omniglot-runs: also run them through this checkpoint's adapter export in ONNX Runtime.")] = None,
    trust: TrustOption = [],
):
    """Few-shot evaluation on meta-test tasks: mean, 95% CI, median and diverged tasks.

    Example: mtl-deploy evaluate runs/maml --episodes 600 --steps 0,1,10

    Example: mtl-deploy evaluate runs/omniglot --omniglot-runs ../shared/omniglot/all_runs.zip
    """
    with user_errors(trust=trust):
        if omniglot_runs is not None:
            from mtl_deploy.meta.omniglot_runs import evaluate_omniglot_runs
            from mtl_deploy.tables import omniglot_runs_table
            typer.echo(omniglot_runs_table(evaluate_omniglot_runs(checkpoint, omniglot_runs, baselines,
                                                                  adapter=adapter)))
            return
        if adapter is not None:
            raise InputError("--adapter applies with --omniglot-runs")
        from mtl_deploy.meta.adapt import evaluate_checkpoint
        from mtl_deploy.tables import evaluation_table

        try:
            counts = tuple(int(s) for s in steps.split(","))
        except ValueError:
            raise InputError(f"--steps takes comma-separated integers like 0,1,10, got {steps!r}") from None
        typer.echo(evaluation_table(evaluate_checkpoint(checkpoint, episodes, counts, shots, baselines, _progress())))


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory.")],
    out: Annotated[Path, typer.Option("--out", help="Export directory to write.")] = Path("export"),
    format: Annotated[str, typer.Option("--format", help="onnx; adapter (on-device adaptation graph of a meta-learned model); triton (a model repository at --out); pt2 (torch.export); aoti (AOTInductor package, loads from C++); torchscript (legacy, torch.jit is deprecated); executorch (model.pte, or adapter.pte for a meta-learned model).")] = "onnx",
    opset: Annotated[int, typer.Option(help="ONNX opset (18 or newer).")] = 20,
    atol: Annotated[Optional[float], typer.Option(help="Absolute tolerance of the parity proof [default: 1e-5, adapter 1e-4].")] = None,
    rtol: Annotated[Optional[float], typer.Option(help="Relative tolerance of the parity proof [default: 1e-4].")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Real input rows (.npz with x, or .csv) to prove parity on.")] = None,
    routed: Annotated[bool, typer.Option(help="One output picked per row by an int64 task_id input (heads of one size).")] = False,
    quantize: Annotated[Optional[str], typer.Option(help="int8: also write model.int8.onnx (ONNX Runtime dynamic quantization).")] = None,
    max_quantization_error: Annotated[float, typer.Option(help="Refuse int8 if an output changes more (see README).")] = 0.05,
    name: Annotated[Optional[str], typer.Option(help="Model name in a Triton repository: letters, digits, _ . - (default: the checkpoint's directory name, or its parent's when that is 'checkpoint').")] = None,
    runtimes: RuntimesOption = None,
    max_batch: Annotated[Optional[int], typer.Option(help="executorch: the largest batch (support or query set) the program takes [default: 256].")] = None,
    trust: TrustOption = [],
):
    """Export a checkpoint and prove parity against PyTorch; exit 1 (nothing written) on a mismatch.

    Example: mtl-deploy export runs/ckpt --format onnx --out runs/export
    """
    with user_errors(trust=trust):
        from mtl_deploy.exporters import export as export_model
        from mtl_deploy.tables import int8_table, parity_table
        report = export_model(checkpoint, out, format=format, opset=opset, atol=atol, rtol=rtol, sample_inputs=data,
                              routed=routed, quantize=quantize, max_quantization_error=max_quantization_error,
                              triton_name=name, runtimes=runtimes, max_batch=max_batch)
        typer.echo(parity_table(report.parity))
        if "int8" in report.manifest:
            typer.echo(int8_table(report.manifest["int8"]))
        typer.echo(f"export: {out}")


@app.command()
def verify(
    export_dir: Annotated[Path, typer.Argument(help="Export directory.")],
    checkpoint: Annotated[Optional[Path], typer.Option(help="Checkpoint it came from: also compare with PyTorch.")] = None,
    atol: Annotated[Optional[float], typer.Option(help="Absolute tolerance [default: 1e-5, adapter 1e-4; never the manifest's].")] = None,
    rtol: Annotated[Optional[float], typer.Option(help="Relative tolerance [default: 1e-4; never the manifest's].")] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP + " cpu by default, so a re-proof reproduces the export's numbers.")] = "cpu",
    runtimes: RuntimesOption = None,
    trust: TrustOption = [],
):
    """Re-check an export: file hashes, the ONNX checker, and parity re-proved with the library's
    tolerances (vs PyTorch with --checkpoint; a pt2 / aoti / torchscript export needs it).

    Example: mtl-deploy verify runs/export --runtimes onnxruntime,reference,openvino,tract
    """
    with user_errors(trust=trust):
        from mtl_deploy.exporters import verify_export
        from mtl_deploy.tables import parity_table
        typer.echo(parity_table(verify_export(export_dir, checkpoint, atol, rtol, device=device, runtimes=runtimes)))
        typer.echo("verified")


@app.command()
def predict(
    export_dir: Annotated[Path, typer.Argument(help=PREDICT_HELP["export_dir"])],
    input: Annotated[Path, typer.Option("--input", help=PREDICT_HELP["input"])],
    task: Annotated[Optional[str], typer.Option(help=PREDICT_HELP["task"])] = None,
    output: Annotated[Optional[Path], typer.Option(help=PREDICT_HELP["output"])] = None,
    header: Annotated[Optional[bool], typer.Option("--header/--no-header", help=PREDICT_HELP["header"])] = None,
    logits: Annotated[bool, typer.Option("--logits", help=PREDICT_HELP["logits"])] = False,
    task_ids: Annotated[Optional[str], typer.Option("--task-ids", help=PREDICT_HELP["task_ids"])] = None,
    device: Annotated[str, typer.Option(help=PREDICT_HELP["device"])] = "auto",
):
    """Predict with an export in ONNX Runtime (no PyTorch needed; mtl-deploy-runtime predict is the same).

    Example: mtl-deploy predict runs/export --input rows.csv --output predictions.csv --device cuda
    """
    with user_errors():
        from mtl_deploy.runtime.files import predict_file, table_text

        table = predict_file(export_dir, input, task, output, header, logits, task_ids, device)
        typer.echo(table_text(table) if output is None else f"predictions: {output}", nl=output is not None)


@app.command()
def analyze(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory.")],
    data: Annotated[Optional[Path], typer.Option(help="Rows to analyse: .npz or .csv holding the model's task columns.")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Analyse a shipped config's data instead, e.g. synthetic-related.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Directory for affinity.png, target_correlation.png, relations.json.")] = Path("relations"),
    threshold: Annotated[float, typer.Option(help="Group tasks whose mean similarity exceeds this.")] = 0.2,
    batch_size: Annotated[int, typer.Option(min=2, help="Rows per gradient batch.")] = 256,
    trust: TrustOption = [],
):
    """Task relations: gradient-affinity and target-correlation heatmaps, suggested task groups.

    Example: mtl-deploy analyze runs/ckpt --data holdout.npz --out runs/relations
    """
    with user_errors(trust=trust):
        from mtl_deploy.config import resolve_config
        from mtl_deploy.mtl.relations import analyze as analyze_relations

        if (data is None) == (preset is None):
            raise InputError("give --data FILE (.npz or .csv) or --preset NAME for the rows to analyse")
        source = data if data is not None else resolve_config(preset=preset).data
        relations = analyze_relations(checkpoint, source, out, batch_size=batch_size, threshold=threshold)
        typer.echo(f"recommended groups: {relations.recommended}  ({relations.reason})")
        typer.echo(f"  by gradient affinity:  {relations.groups_by_affinity}")
        typer.echo(f"  by target correlation: {relations.groups_by_correlation}")
        typer.echo(f"heatmaps and relations.json: {out}")


@app.command()
def inspect(path: Annotated[Path, typer.Argument(help="Checkpoint or export directory.")]):
    """Show tasks, inputs, outputs, opset, parameter count and file sizes.

    Example: mtl-deploy inspect runs/export
    """
    with user_errors():
        from mtl_deploy.inspection import describe
        typer.echo(describe(path))


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Directory for the checkpoint and export.")] = Path("demo-out"),
    seed: Annotated[int, typer.Option(help="Seed of the synthetic tasks and of training.")] = 0,
):
    """Train, compare with single-task baselines, save, export, prove parity, time serving.

    Example: mtl-deploy demo --out demo-out
    """
    with user_errors():
        from mtl_deploy.demo import format_summary, run_demo
        typer.echo(format_summary(run_demo(out, _progress(), seed)))
