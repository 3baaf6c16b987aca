"""The `mtl-deploy-runtime` command line, for machines without PyTorch (argparse, so it
needs nothing beyond the runtime's own dependencies). `predict` takes the flags of
`mtl-deploy predict`, whose help texts live here, and calls the same library function.

Errors print one line on stderr and exit 2 (bad input, a usage error included) or 1
(failure); Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtl_deploy_runtime.errors import COMMAND_ERRORS, command_error
from mtl_deploy_runtime.files import predict_file, table_text
from mtl_deploy_runtime.version import __version__

DEVICE_HELP = ("ONNX Runtime device: auto (CUDA when the installed ONNX Runtime has it, else cpu), cpu, cuda, tensorrt, "
               "or cuda:N / tensorrt:N for GPU N; "
               "a device whose provider is missing is an error, never a CPU fallback.")
PREDICT = "Predict with an export in ONNX Runtime (no PyTorch needed)."
PREDICT_HELP = {
    "export_dir": "Export directory (model.onnx + manifest.json).",
    "input": "Rows to predict: .npy, .csv (a header row is optional, see --header), or .npz with one array per model input.",
    "task": "Only this task's output.",
    "output": "Write predictions to .csv or .json (one column per task: a class task's label and probability), or .npz (the raw outputs), instead of printing.",
    "header": "CSV input: the first row is (or is not) a header [default: a header when a cell of it is not a number; declare a header made only of numbers].",
    "logits": "Class tasks: the raw logits instead of label and probability.",
    "task_ids": "Routed export: each row's task id, an .npy file or a column of the CSV input.",
    "device": DEVICE_HELP,
}


class _Parser(argparse.ArgumentParser):
    """A usage error is one line, like every other error."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="mtl-deploy-runtime", description="Serve mtl-deploy exports with ONNX Runtime and numpy.")
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    predict = commands.add_parser("predict", help=PREDICT, description=PREDICT,
                                  epilog="Example: mtl-deploy-runtime predict runs/export --input rows.csv "
                                         "--output predictions.csv")
    predict.add_argument("export_dir", type=Path, help=PREDICT_HELP["export_dir"])
    predict.add_argument("--input", type=Path, required=True, help=PREDICT_HELP["input"])
    predict.add_argument("--task", help=PREDICT_HELP["task"])
    predict.add_argument("--output", type=Path, help=PREDICT_HELP["output"])
    predict.add_argument("--header", action=argparse.BooleanOptionalAction, help=PREDICT_HELP["header"])
    predict.add_argument("--logits", action="store_true", help=PREDICT_HELP["logits"])
    predict.add_argument("--task-ids", help=PREDICT_HELP["task_ids"])
    predict.add_argument("--device", default="auto", help=PREDICT_HELP["device"])
    predict.set_defaults(run=_predict)
    return top


def _predict(args: argparse.Namespace) -> None:
    table = predict_file(args.export_dir, args.input, args.task, args.output, args.header, args.logits,
                         args.task_ids, args.device)
    if args.output is None:
        sys.stdout.write(table_text(table))
    else:
        print(f"predictions: {args.output}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except COMMAND_ERRORS as err:
        line, code = command_error(err)
        print(line, file=sys.stderr)
        return code
    return 0
