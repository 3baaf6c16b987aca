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

from mtl_deploy.errors import MtlDeployError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train multi-task models, export them to ONNX with proved parity, verify and inspect them.")


@contextlib.contextmanager
def user_errors():
    """Turn library errors into one line on stderr and the matching exit code."""
    try:
        yield
    except MtlDeployError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: nothing was written; any previous artifact is intact", err=True)
        raise typer.Exit(130) from None


def _progress() -> bool:
    return sys.stderr.isatty()


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Argument(help="JSON run config (sections data, model, train).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Checkpoint directory to write.")] = Path("checkpoint"),
    preset: Annotated[Optional[str], typer.Option(help="A shipped config instead of CONFIG, e.g. synthetic-related.")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Data file (.csv or .npz) overriding data.path.")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Override train.epochs.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override train.seed.")] = None,
):
    """Train a multi-task model and write a checkpoint.

    Example: mtl-deploy train --preset synthetic-related --out runs/ckpt
    """
    from mtl_deploy.config import resolve_config
    from mtl_deploy.mtl.fit import train as train_model
    from mtl_deploy.report import metrics_table

    with user_errors():
        overrides = {"data.path": str(data) if data else None, "train.epochs": epochs, "train.seed": seed}
        fitted = train_model(resolve_config(config, preset, overrides), out, _progress())
        typer.echo(metrics_table(fitted.result.val_metrics))
        typer.echo(f"best epoch {fitted.result.best_epoch} of {fitted.result.epochs_run}; checkpoint: {out}")


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory.")],
    out: Annotated[Path, typer.Option("--out", help="Export directory to write.")] = Path("export"),
    format: Annotated[str, typer.Option("--format", help="Artifact format: onnx.")] = "onnx",
    opset: Annotated[int, typer.Option(help="ONNX opset (18 or newer).")] = 20,
    atol: Annotated[float, typer.Option(help="Absolute tolerance of the parity proof.")] = 1e-5,
    rtol: Annotated[float, typer.Option(help="Relative tolerance of the parity proof.")] = 1e-4,
    data: Annotated[Optional[Path], typer.Option(help="Real input rows (.npz with x, or .csv) to prove parity on.")] = None,
):
    """Export a checkpoint and prove parity in ONNX Runtime; exit 1 (nothing written) on a mismatch.

    Example: mtl-deploy export runs/ckpt --format onnx --out runs/export
    """
    from mtl_deploy.export import export as export_model
    from mtl_deploy.report import parity_table

    with user_errors():
        report = export_model(checkpoint, out, format=format, opset=opset, atol=atol, rtol=rtol, sample_inputs=data)
        typer.echo(parity_table(report.parity))
        typer.echo(f"export: {out}")


@app.command()
def verify(
    export_dir: Annotated[Path, typer.Argument(help="Export directory.")],
    checkpoint: Annotated[Optional[Path], typer.Option(help="Checkpoint it came from: also compare with PyTorch.")] = None,
    atol: Annotated[Optional[float], typer.Option(help="Absolute tolerance (default: the export's).")] = None,
    rtol: Annotated[Optional[float], typer.Option(help="Relative tolerance (default: the export's).")] = None,
):
    """Re-check an export: file hashes, the ONNX checker, and parity (vs PyTorch with --checkpoint).

    Example: mtl-deploy verify runs/export --checkpoint runs/ckpt
    """
    from mtl_deploy.export import verify_export
    from mtl_deploy.report import parity_table

    with user_errors():
        typer.echo(parity_table(verify_export(export_dir, checkpoint, atol, rtol)))
        typer.echo("verified")


@app.command()
def inspect(path: Annotated[Path, typer.Argument(help="Checkpoint or export directory.")]):
    """Show tasks, inputs, outputs, opset, parameter count and file sizes.

    Example: mtl-deploy inspect runs/export
    """
    from mtl_deploy.describe import describe

    with user_errors():
        typer.echo(describe(path))


@app.command()
def demo(out: Annotated[Path, typer.Option("--out", help="Directory for the checkpoint and export.")] = Path("demo-out")):
    """Train, compare with single-task baselines, save, export, prove parity, time serving.

    Example: mtl-deploy demo --out demo-out
    """
    from mtl_deploy.demo import format_summary, run_demo

    with user_errors():
        typer.echo(format_summary(run_demo(out, _progress())))
