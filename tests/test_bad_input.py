"""Every bad input, across every command and the Python API, is answered with one line and
the documented exit code (2 bad input, 1 failure), never a traceback or a raw numpy, torch
or ONNX Runtime error, and leaves every file as it was: each row hashes the directories it
reads and writes (inputs and the parent of every output, hidden siblings and lock files
included) before and after. The rows that write also run on a full disk and on a read-only
file system (small tmpfs mounts, when the tests run as root)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from typer.testing import CliRunner

import mtl_deploy
from mtl_deploy import demo
from mtl_deploy.cli import app
from mtl_deploy.config import resolve_config
from mtl_deploy.errors import MtlDeployError
from mtl_deploy.exporters import verify_export
from mtl_deploy.runtime import FewShotAdapter, Predictor, predict_file
from mtl_deploy.runtime.cli import main as runtime_main
from mtl_deploy.runtime.files import prediction_table
from tests.bad_input_cases import FEATURES, build_workspace

runner = CliRunner()
LONGEST_MESSAGE = 1000  # characters: every list that goes into a message is bounded
LARGEST_TENSOR = 2**26  # elements: no bad input may cost more memory than this before it is refused
HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)  # Python hides these
READS_BACK = -1  # a row whose command must succeed (exit 0) or refuse in one line naming what to use


@dataclass(frozen=True)
class Row:
    id: str
    code: int  # the exit code; for the API, the exit_code of the MtlDeployError raised
    says: str  # what the one line names (case-insensitive; "a|b": either)
    args: tuple[str, ...] = ()  # CLI arguments, "{name}" standing for a workspace path
    call: Callable[[dict], object] | None = None  # API rows: called with the workspace paths
    process: bool = False  # run `python -m mtl_deploy` in a child process (native writers may abort)
    runtime: bool = False  # run the args with the mtl-deploy-runtime command instead of mtl-deploy


def cli(id: str, code: int, says: str, *args: str, process: bool = False):
    return pytest.param(Row(id, code, says, args, process=process), id=id)


def api(id: str, code: int, says: str, call: Callable[[dict], object]):
    return pytest.param(Row(f"api-{id}", code, says, call=call), id=f"api-{id}")


def support(p, name):
    with np.load(p[name], allow_pickle=False) as archive:
        return archive["x"], archive["y"]


def sinusoid(n=10):
    x = np.linspace(-4, 4, n, dtype=np.float32)[:, None]
    return x, np.sin(x)


def rows(n=5):
    return np.random.default_rng(0).standard_normal((n, FEATURES)).astype(np.float32)


NEW = "{outs}/new"  # an output path that does not exist yet
MAML_ADAPT = ("adapt", "{maml}", "--support", "{support}")
ANALYZE = ("analyze", "{ckpt}", "--preset", "synthetic-related")
PREDICT = ("predict", "{onnx}", "--input")
CPU_BUILD = "CUDAExecutionProvider" not in onnxruntime.get_available_providers()

CONFIG_ROWS = [cli(f"train-config-{name.replace('_', '-')}", 2, says, "train", f"{{cfg_{name}}}", "--out", NEW)
               for name, says in [
                   ("epochs_negative", "epochs"), ("epochs_string", "epochs"), ("epochs_float", "epochs"),
                   ("batch_size_zero", "batch_size"), ("lr_nan", "lr"), ("lr_negative", "lr"), ("lr_string", "lr"),
                   ("weight_decay_negative", "weight_decay"), ("patience_negative", "patience"),
                   ("checkpoint_every_zero", "checkpoint_every"), ("seed_string", "seed"),
                   ("weighting_unknown", "psychic"), ("aggregation_unknown", "vote"), ("device_unknown", "device"),
                   ("val_fraction_high", "val_fraction"), ("source_unknown", "parquet"),
                   ("trunk_hidden_negative", "hidden"), ("trunk_hidden_string", "hidden"),
                   ("trunk_activation_unknown", "swish2"), ("trunk_dropout_high", "dropout"),
                   ("trunk_type_unknown", "transformer9"), ("sharing_unknown", "telepathy"),
                   ("task_kind_unknown", "ordinal"), ("task_out_dim_zero", "out_dim"),
                   ("meta_shots_zero", "shots"), ("meta_inner_lr_nan", "inner_lr"),
                   ("meta_iterations_negative", "iterations"), ("meta_algorithm_unknown", "sorcery"),
                   ("meta_ways_string", "ways"), ("meta_outer_lr_inf", "outer_lr"), ("meta_device_unknown", "device"),
                   ("list", "object"), ("section_unknown", "trian"), ("broken", "JSON")]]

TRAIN_ROWS = [
    cli("train-config-missing", 2, "does not exist", "train", "{missing}.json", "--out", NEW),
    cli("train-preset-unknown", 2, "nope", "train", "--preset", "nope", "--out", NEW),
    cli("train-no-config", 2, "preset", "train", "--out", NEW),
    cli("train-csv-duplicate-columns", 2, "duplicate", "train", "{cfg_train_duplicate_csv}", "--out", NEW),
    cli("train-csv-header-only", 2, "no data rows", "train", "{cfg_train_header_only_csv}", "--out", NEW),
    cli("train-csv-oversized-field", 2, "train_huge_field.csv", "train", "{cfg_train_huge_field_csv}", "--out", NEW),
    cli("train-csv-numeric-header", 2, "price", "train", "{cfg_train_numeric_header_csv}", "--out", NEW),
    cli("train-data-missing", 2, "does not exist", "train", "{cfg_train_good_csv}", "--data", "{missing}.csv",
        "--out", NEW),
    cli("train-out-user-dir", 2, "{user}", "train", "{cfg_good}", "--out", "{user}"),
    cli("train-out-an-export", 2, "{onnx}", "train", "{cfg_good}", "--out", "{onnx}"),
    cli("train-out-dot", 2, "--out|directory", "train", "{cfg_good}", "--out", "."),
    cli("train-out-dangling-symlink", 2, "{dangling}", "train", "{cfg_good}", "--out", "{dangling}"),
    cli("train-out-a-file", 2, "not a directory", "train", "{cfg_good}", "--out", "{a_file}"),
    cli("train-out-holds-the-data", 2, "input|inside|contains", "train", "{cfg_train_good_csv}", "--out", "{root}/data"),
    cli("train-out-is-the-data", 2, "train_good.csv", "train", "{cfg_train_good_csv}", "--out", "{train_good_csv}"),
    cli("train-resume-corrupt-state", 1, "corrupt", "train", "--resume", "{corrupt_state}", "--epochs", "4"),
    cli("train-resume-state-of-another-run", 1, "run", "train", "--resume", "{foreign_state}", "--epochs", "4"),
    cli("train-resume-user-dir", 2, "resum", "train", "--resume", "{user}"),
    cli("train-resume-missing", 2, "resum", "train", "--resume", "{missing}"),
    cli("train-resume-out-differs", 2, "differ", "train", "--resume", "{ckpt}", "--out", NEW),
    cli("train-resume-other-preset", 2, "differs", "train", "--preset", "synthetic-unrelated", "--resume", "{ckpt}"),
    cli("train-device-unknown", 2, "device", "train", "{cfg_good}", "--device", "gpu", "--out", NEW),
    # no machine has 64 GPUs: refused with or without CUDA (none seen, or that one missing), before anything is written
    cli("train-device-absent", 2, "cuda:64", "train", "{cfg_good}", "--device", "cuda:64", "--out", NEW),
    cli("train-meta-device-absent", 2, "cuda:64", "train", "--preset", "sinusoid-maml", "--device", "cuda:64",
        "--out", NEW),
    cli("train-resume-device-absent", 2, "cuda:64", "train", "--resume", "{ckpt}", "--epochs", "4", "--device",
        "cuda:64"),
]

ADAPT_ROWS = [
    cli("adapt-lr-nan", 2, "lr", *MAML_ADAPT, "--out", NEW, "--lr", "nan"),
    cli("adapt-lr-inf", 2, "lr", *MAML_ADAPT, "--out", NEW, "--lr", "inf"),
    cli("adapt-lr-negative", 2, "lr", *MAML_ADAPT, "--out", NEW, "--lr=-5"),
    cli("adapt-support-missing", 2, "does not exist", "adapt", "{maml}", "--support", "{missing}.npz", "--out", NEW),
    cli("adapt-support-npy-without-y", 2, "y", "adapt", "{maml}", "--support", "{support_x_npy}", "--out", NEW),
    cli("adapt-support-zip-not-npz", 2, "not_npz.npz", "adapt", "{maml}", "--support", "{not_npz}", "--out", NEW),
    cli("adapt-support-garbage", 2, "garbage.npz", "adapt", "{maml}", "--support", "{garbage_npz}", "--out", NEW),
    cli("adapt-support-strings", 2, "numeric|dtype|number", "adapt", "{maml}", "--support", "{support_strings}",
        "--out", NEW),
    cli("adapt-support-y-nan", 2, "nan", "adapt", "{maml}", "--support", "{support_y_nan}", "--out", NEW),
    cli("adapt-support-y-inf", 2, "inf|finite", "adapt", "{maml}", "--support", "{support_y_inf}", "--out", NEW),
    cli("adapt-support-x-inf", 2, "inf|finite", "adapt", "{maml}", "--support", "{support_x_inf}", "--out", NEW),
    cli("adapt-support-y-wider-than-head", 2, "y", "adapt", "{maml}", "--support", "{support_wide_y}", "--out", NEW),
    cli("adapt-support-x-wrong-shape", 2, "x", "adapt", "{maml}", "--support", "{support_wrong_x}", "--out", NEW),
    cli("adapt-support-fewer-labels", 2, "7", "adapt", "{maml}", "--support", "{support_short_y}", "--out", NEW),
    cli("adapt-support-empty", 2, "empty|no |0", "adapt", "{maml}", "--support", "{support_empty}", "--out", NEW),
    cli("adapt-support-pickled-objects", 2, "support_objects|object|pickle", "adapt", "{maml}", "--support",
        "{support_objects}", "--out", NEW),
    cli("adapt-support-y-npy-too-short", 2, "7", "adapt", "{maml}", "--support", "{support_x_npy}", "--support-y",
        "{support_y7_npy}", "--out", NEW),
    cli("adapt-support-y-npy-strings", 2, "numeric|dtype|number", "adapt", "{maml}", "--support", "{support_x_npy}",
        "--support-y", "{rows_strings}", "--out", NEW),
    cli("adapt-support-no-y", 2, "y", "adapt", "{maml}", "--support", "{support_no_y}", "--out", NEW),
    cli("adapt-not-meta-learned", 2, "meta", "adapt", "{ckpt}", "--support", "{support}", "--out", NEW),
    cli("adapt-checkpoint-missing", 2, "does not exist", "adapt", "{missing}", "--support", "{support}", "--out", NEW),
    cli("adapt-label-out-of-range", 2, "label|class", "adapt", "{digits}", "--support", "{digits_label_out_of_range}",
        "--out", NEW),
    cli("adapt-label-huge", 2, "label|class", "adapt", "{digits}", "--support", "{digits_label_huge}", "--out", NEW),
    cli("adapt-label-negative", 2, "label|class", "adapt", "{digits}", "--support", "{digits_label_negative}",
        "--out", NEW),
    cli("adapt-label-fraction", 2, "label|class|whole", "adapt", "{digits}", "--support", "{digits_label_fraction}",
        "--out", NEW),
    cli("adapt-out-user-dir", 2, "{user}", *MAML_ADAPT, "--out", "{user}"),
    cli("adapt-out-is-the-input", 2, "{maml}", *MAML_ADAPT, "--out", "{maml}"),
    cli("adapt-out-inside-the-input", 2, "{maml}", *MAML_ADAPT, "--out", "{maml}/adapted"),
    cli("adapt-out-parent-of-the-input", 2, "{arts}", *MAML_ADAPT, "--out", "{arts}"),
    cli("adapt-out-an-export", 2, "{adapter}", *MAML_ADAPT, "--out", "{adapter}"),
    cli("adapt-out-dangling-symlink", 2, "{dangling}", *MAML_ADAPT, "--out", "{dangling}"),
]

EVALUATE_AND_ANALYZE_ROWS = [
    cli("evaluate-not-meta-learned", 2, "meta", "evaluate", "{ckpt}", "--episodes", "2"),
    cli("evaluate-steps-not-numbers", 2, "steps", "evaluate", "{maml}", "--steps", "a,b"),
    cli("evaluate-steps-negative", 2, "steps", "evaluate", "{maml}", "--steps=-1", "--episodes", "2"),
    cli("evaluate-episodes-zero", 2, "episodes", "evaluate", "{maml}", "--episodes", "0"),
    cli("evaluate-shots-zero", 2, "shots", "evaluate", "{maml}", "--shots", "0", "--episodes", "2"),
    cli("evaluate-missing", 2, "does not exist", "evaluate", "{missing}"),
    cli("evaluate-corrupt-weights", 1, "corrupt", "evaluate", "{corrupt_weights}", "--episodes", "2"),
    cli("analyze-threshold-nan", 2, "threshold", *ANALYZE, "--out", NEW, "--threshold", "nan"),
    cli("analyze-threshold-inf", 2, "threshold", *ANALYZE, "--out", NEW, "--threshold", "inf"),
    cli("analyze-out-user-dir", 2, "{user}", *ANALYZE, "--out", "{user}"),
    cli("analyze-out-is-the-input", 2, "{ckpt}", *ANALYZE, "--out", "{ckpt}"),
    cli("analyze-out-an-export", 2, "{onnx}", *ANALYZE, "--out", "{onnx}"),
    cli("analyze-out-dangling-symlink", 2, "{dangling}", *ANALYZE, "--out", "{dangling}"),
    cli("analyze-no-rows", 2, "--data", "analyze", "{ckpt}", "--out", NEW),
    cli("analyze-preset-unknown", 2, "nope", "analyze", "{ckpt}", "--preset", "nope", "--out", NEW),
    cli("analyze-csv-duplicate-columns", 2, "duplicate", "analyze", "{ckpt}", "--data", "{analyze_duplicate_csv}",
        "--out", NEW),
    cli("analyze-data-missing", 2, "does not exist", "analyze", "{ckpt}", "--data", "{missing}.npz", "--out", NEW),
    cli("analyze-data-zip-not-npz", 2, "not_npz.npz", "analyze", "{ckpt}", "--data", "{not_npz}", "--out", NEW),
    cli("analyze-not-multitask", 2, "multi-task|task", "analyze", "{maml}", "--preset", "synthetic-related",
        "--out", NEW),
]

EXPORT_ROWS = [
    cli("export-out-user-dir", 2, "{user}", "export", "{ckpt}", "--out", "{user}"),
    cli("export-runtime-unknown", 2, "unknown runtime", "export", "{ckpt}", "--out", "{root}/fresh-export", "--runtimes", "ort"),
    cli("export-runtimes-on-pt2", 2, "--runtimes applies", "export", "{ckpt}", "--out", "{root}/fresh-export", "--format", "pt2",
        "--runtimes", "onnxruntime"),
    cli("export-max-batch-on-onnx", 2, "--max-batch applies", "export", "{ckpt}", "--out", "{root}/fresh-export", "--max-batch", "8"),
    cli("export-out-is-the-input", 2, "{ckpt}", "export", "{ckpt}", "--out", "{ckpt}"),
    cli("export-out-inside-the-input", 2, "{ckpt}", "export", "{ckpt}", "--out", "{ckpt}/export"),
    cli("export-out-parent-of-the-input", 2, "{arts}", "export", "{ckpt}", "--out", "{arts}"),
    cli("export-out-dot", 2, "--out|directory", "export", "{ckpt}", "--out", "."),
    cli("export-out-dangling-symlink", 2, "{dangling}", "export", "{ckpt}", "--out", "{dangling}"),
    cli("export-out-a-checkpoint", 2, "{other_ckpt}", "export", "{ckpt}", "--out", "{other_ckpt}"),
    cli("export-pt2-out-user-dir", 2, "{user}", "export", "{ckpt}", "--format", "pt2", "--out", "{user}"),
    cli("export-torchscript-out-is-the-input", 2, "{ckpt}", "export", "{ckpt}", "--format", "torchscript",
        "--out", "{ckpt}"),
    cli("export-aoti-out-user-dir", 2, "{user}", "export", "{ckpt}", "--format", "aoti", "--out", "{user}"),
    cli("export-adapter-out-user-dir", 2, "{user}", "export", "{maml}", "--format", "adapter", "--out", "{user}"),
    cli("export-adapter-out-is-the-input", 2, "{maml}", "export", "{maml}", "--format", "adapter", "--out", "{maml}"),
    cli("export-adapter-not-meta-learned", 2, "meta", "export", "{ckpt}", "--format", "adapter", "--out", NEW),
    cli("export-triton-name-with-quote", 2, "name", "export", "{ckpt}", "--format", "triton", "--out", NEW,
        "--name", 'a"b'),
    cli("export-triton-name-a-path", 2, "name", "export", "{ckpt}", "--format", "triton", "--out", NEW,
        "--name", "../x"),
    cli("export-triton-out-is-the-input", 2, "{ckpt}", "export", "{ckpt}", "--format", "triton", "--out", "{ckpt}"),
    cli("export-format-unknown", 2, "tflite", "export", "{ckpt}", "--format", "tflite", "--out", NEW),
    cli("export-opset-too-old", 2, "opset", "export", "{ckpt}", "--opset", "7", "--out", NEW),
    cli("export-atol-nan", 2, "atol|tolerance", "export", "{ckpt}", "--atol", "nan", "--out", NEW),
    cli("export-atol-negative", 2, "atol|tolerance", "export", "{ckpt}", "--atol=-1", "--out", NEW),
    cli("export-rtol-inf", 2, "rtol|tolerance", "export", "{ckpt}", "--rtol", "inf", "--out", NEW),
    cli("export-routed-pt2", 2, "routed", "export", "{ckpt}", "--routed", "--format", "pt2", "--out", NEW),
    cli("export-quantize-unknown", 2, "int4", "export", "{ckpt}", "--quantize", "int4", "--out", NEW),
    cli("export-quantize-pt2", 2, "quantize", "export", "{ckpt}", "--quantize", "int8", "--format", "pt2",
        "--out", NEW),
    cli("export-quantization-error-nan", 2, "quantization", "export", "{ckpt}", "--quantize", "int8",
        "--max-quantization-error", "nan", "--out", NEW),
    cli("export-data-wrong-width", 2, "7 features", "export", "{ckpt}", "--data", "{x_wide}", "--out", NEW),
    cli("export-data-strings", 2, "numeric|dtype|number", "export", "{ckpt}", "--data", "{x_strings}", "--out", NEW),
    cli("export-data-nan", 2, "nan", "export", "{ckpt}", "--data", "{x_nan}", "--out", NEW),
    cli("export-data-no-rows", 2, "no rows|no data rows|empty", "export", "{ckpt}", "--data", "{x_empty}",
        "--out", NEW),
    cli("export-csv-header-only", 2, "no data rows", "export", "{ckpt}", "--data", "{header_only_csv}", "--out", NEW),
    cli("export-csv-duplicate-columns", 2, "duplicate", "export", "{ckpt}", "--data", "{duplicate_csv}", "--out", NEW),
    cli("export-csv-oversized-field", 2, "huge_field.csv", "export", "{ckpt}", "--data", "{huge_field_csv}",
        "--out", NEW),
    cli("export-data-zip-not-npz", 2, "not_npz.npz", "export", "{ckpt}", "--data", "{not_npz}", "--out", NEW),
    cli("export-data-unknown-type", 2, ".txt", "export", "{ckpt}", "--data", "{rows_txt}", "--out", NEW),
    cli("export-data-missing", 2, "does not exist", "export", "{ckpt}", "--data", "{missing}.npz", "--out", NEW),
    cli("export-nan-weights", 1, "nan", "export", "{nan_ckpt}", "--out", NEW),
    cli("export-tampered-width", 1, "hidden|architecture|weights", "export", "{wide_ckpt}", "--out", NEW),
    cli("export-corrupt-weights", 1, "corrupt", "export", "{corrupt_weights}", "--out", NEW),
    cli("export-checkpoint-missing", 2, "does not exist", "export", "{missing}", "--out", NEW),
    cli("export-an-export", 2, "checkpoint", "export", "{onnx}", "--out", NEW),
    cli("export-user-dir", 2, "checkpoint", "export", "{user}", "--out", NEW),
]

VERIFY_INSPECT_ROWS = [
    cli("verify-edited-model-atol-1e9", 1, "parity", "verify", "{tampered_atol}", "--checkpoint", "{ckpt}"),
    cli("verify-edited-model-no-batches", 1, "parity", "verify", "{tampered_batches}", "--checkpoint", "{ckpt}"),
    cli("verify-atol-nan", 2, "atol|tolerance", "verify", "{onnx}", "--checkpoint", "{ckpt}", "--atol", "nan"),
    cli("verify-rtol-negative", 2, "rtol|tolerance", "verify", "{onnx}", "--rtol=-1"),
    cli("verify-corrupt-manifest", 1, "corrupt", "verify", "{corrupt_manifest}"),
    cli("verify-manifest-missing-fields", 1, "manifest", "verify", "{hollow_manifest}"),
    cli("verify-artifact-relative-escape", 1, "artifact|outside", "verify", "{escape_relative}"),
    cli("verify-artifact-absolute-path", 1, "artifact|outside", "verify", "{escape_absolute}"),
    cli("verify-a-checkpoint", 2, "export", "verify", "{ckpt}"),
    cli("verify-checkpoint-other-weights", 2, "other weights", "verify", "{onnx}", "--checkpoint", "{maml}"),
    cli("verify-adapter-wrong-checkpoint", 2, "{ckpt}", "verify", "{adapter}", "--checkpoint", "{ckpt}"),
    cli("verify-missing", 2, "not an export|does not exist", "verify", "{missing}"),
    cli("verify-user-dir", 2, "export", "verify", "{user}"),
    cli("verify-device-unknown", 2, "nonsense", "verify", "{onnx}", "--device", "nonsense"),
    cli("verify-runtime-unknown", 2, "unknown runtime 'nonsense'", "verify", "{onnx}", "--runtimes", "onnxruntime,nonsense"),
    cli("verify-only-the-reference", 2, "other runtime", "verify", "{onnx}", "--runtimes", "reference"),
    cli("verify-runtimes-on-pt2", 2, "--runtimes apply to ONNX", "verify", "{pt2}", "--checkpoint", "{ckpt}",
        "--runtimes", "onnxruntime"),
    cli("inspect-missing", 2, "does not exist", "inspect", "{missing}"),
    cli("inspect-corrupt-manifest", 1, "corrupt", "inspect", "{corrupt_manifest}"),
    cli("inspect-manifest-missing-fields", 1, "manifest", "inspect", "{hollow_manifest}"),
    cli("inspect-user-dir", 2, "manifest", "inspect", "{user}"),
    cli("inspect-a-file", 2, "a_file", "inspect", "{a_file}"),
]

PREDICT_ROWS = [
    cli("predict-a-checkpoint", 2, "export", "predict", "{ckpt}", "--input", "{rows_npy}"),
    cli("predict-torchscript-export", 2, "torchscript", "predict", "{torchscript}", "--input", "{rows_npy}"),
    cli("predict-pt2-export", 2, "pt2", "predict", "{pt2}", "--input", "{rows_npy}"),
    cli("predict-adapter-export", 2, "adapt", "predict", "{adapter}", "--input", "{rows_npy}"),
    cli("predict-corrupt-manifest", 1, "corrupt", "predict", "{corrupt_manifest}", "--input", "{rows_npy}"),
    cli("predict-manifest-missing-fields", 1, "manifest", "predict", "{hollow_manifest}", "--input", "{rows_npy}"),
    cli("predict-artifact-relative-escape", 1, "artifact|outside", "predict", "{escape_relative}",
        "--input", "{rows_npy}"),
    cli("predict-artifact-absolute-path", 1, "artifact|outside", "predict", "{escape_absolute}",
        "--input", "{rows_npy}"),
    cli("predict-export-missing", 2, "not an export|does not exist", "predict", "{missing}", "--input", "{rows_npy}"),
    cli("predict-input-missing", 2, "does not exist", *PREDICT, "{missing}.npy"),
    cli("predict-input-unknown-type", 2, ".txt", *PREDICT, "{rows_txt}"),
    cli("predict-input-nan", 2, "nan", *PREDICT, "{rows_nan}"),
    cli("predict-input-inf", 2, "inf", *PREDICT, "{rows_inf}"),
    cli("predict-input-strings", 2, "numeric|dtype|number", *PREDICT, "{rows_strings}"),
    cli("predict-input-3d", 2, "shape", *PREDICT, "{rows_3d}"),
    cli("predict-input-no-rows", 2, "no rows|no data rows|empty", *PREDICT, "{rows_empty}"),
    cli("predict-input-wrong-width", 2, "53", *PREDICT, "{rows_wide}"),
    cli("predict-input-pickled-objects", 2, "rows_objects|object|pickle", *PREDICT, "{rows_objects}"),
    cli("predict-input-garbage-npy", 2, "garbage.npy", *PREDICT, "{garbage_npy}"),
    cli("predict-csv-empty", 2, "empty|no data rows", *PREDICT, "{empty_csv}"),
    cli("predict-csv-header-only", 2, "no data rows", *PREDICT, "{header_only_csv}"),
    cli("predict-csv-text-cell", 2, "abc|number", *PREDICT, "{text_cell_csv}"),
    cli("predict-csv-ragged", 2, "ragged.csv", *PREDICT, "{ragged_csv}"),
    cli("predict-csv-nan", 2, "nan", *PREDICT, "{nan_csv}"),
    cli("predict-csv-wrong-width", 2, "7", *PREDICT, "{narrow_csv}"),
    cli("predict-csv-duplicate-columns", 2, "duplicate", *PREDICT, "{duplicate_csv}"),
    cli("predict-task-unknown", 2, "nope", *PREDICT, "{rows_npy}", "--task", "nope"),
    cli("predict-routed-without-task", 2, "task", "predict", "{routed}", "--input", "{rows6_npy}"),
    cli("predict-output-unknown-type", 2, ".txt", *PREDICT, "{rows_npy}", "--output", "{outs}/p.txt"),
    cli("predict-output-under-a-file", 1, "a_file", *PREDICT, "{rows_npy}", "--output", "{a_file}/p.csv"),
    cli("predict-output-is-a-directory", 2, "{user}", *PREDICT, "{rows_npy}", "--output", "{user}"),
    cli("predict-device-unknown", 2, "nonsense", *PREDICT, "{rows_npy}", "--device", "nonsense"),
    *([cli("predict-device-without-its-provider", 1, "pip install onnxruntime-gpu", *PREDICT, "{rows_npy}",
           "--device", "cuda", "--output", "{outs}/p.csv")] if CPU_BUILD else []),  # a GPU build has CUDA to use
]

DEMO_ROWS = [
    cli("demo-out-a-file", 2, "a_file", "demo", "--out", "{a_file}"),
    cli("demo-out-dangling-symlink", 2, "{dangling}", "demo", "--out", "{dangling}"),
    cli("demo-out-holds-a-users-checkpoint-dir", 2, "{user_demo}", "demo", "--out", "{user_demo}"),
]

API_ROWS = [
    api("save-out-user-dir", 2, "{user}", lambda p: mtl_deploy.save(mtl_deploy.load(p["ckpt"]), p["user"])),
    api("save-out-an-export", 2, "{onnx}", lambda p: mtl_deploy.save(mtl_deploy.load(p["ckpt"]), p["onnx"])),
    api("save-out-a-file", 2, "not a directory", lambda p: mtl_deploy.save(mtl_deploy.load(p["ckpt"]), p["a_file"])),
    api("save-not-an-mtl-deploy-model", 2, "Linear", lambda p: mtl_deploy.save(torch.nn.Linear(2, 2), p["outs"] / "x")),
    api("save-nan-sample-inputs", 2, "nan", lambda p: mtl_deploy.save(
        mtl_deploy.load(p["ckpt"]), p["outs"] / "x", sample_inputs=torch.full((3, FEATURES), float("nan")))),
    api("train-out-user-dir", 2, "{user}", lambda p: mtl_deploy.train(resolve_config(p["cfg_good"]), p["user"])),
    api("train-out-an-export", 2, "{onnx}", lambda p: mtl_deploy.train(resolve_config(p["cfg_good"]), p["onnx"])),
    api("train-out-is-the-data", 2, "train_good.csv",
        lambda p: mtl_deploy.train(resolve_config(p["cfg_train_good_csv"]), p["train_good_csv"])),
    api("load-missing", 2, "does not exist", lambda p: mtl_deploy.load(p["missing"])),
    api("load-an-export", 2, "checkpoint", lambda p: mtl_deploy.load(p["onnx"])),
    api("load-tampered-width", 1, "hidden|architecture|weights", lambda p: mtl_deploy.load(p["wide_ckpt"])),
    api("load-corrupt-weights", 1, "corrupt", lambda p: mtl_deploy.load(p["corrupt_weights"])),
    api("adapt-string-arrays", 2, "numeric|dtype|number",
        lambda p: mtl_deploy.adapt(p["maml"], np.array([["a"]] * 10), np.array([["b"]] * 10))),
    api("adapt-lr-nan", 2, "lr", lambda p: mtl_deploy.adapt(p["maml"], *sinusoid(), lr=float("nan"))),
    api("adapt-lr-inf", 2, "lr", lambda p: mtl_deploy.adapt(p["maml"], *sinusoid(), lr=float("inf"))),
    api("adapt-steps-negative", 2, "steps", lambda p: mtl_deploy.adapt(p["maml"], *sinusoid(), steps=-1)),
    api("adapt-targets-wider-than-head", 2, "y|target",
        lambda p: mtl_deploy.adapt(p["maml"], sinusoid()[0], np.ones((10, 3), np.float32))),
    api("adapt-targets-nan", 2, "nan", lambda p: mtl_deploy.adapt(p["maml"], sinusoid()[0], np.full((10, 1), np.nan))),
    api("adapt-empty-support", 2, "empty|no |0",
        lambda p: mtl_deploy.adapt(p["maml"], np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32))),
    api("adapt-not-meta-learned", 2, "meta", lambda p: mtl_deploy.adapt(p["ckpt"], rows(), np.zeros(5))),
    api("adapt-task-unknown", 2, "nope", lambda p: mtl_deploy.adapt(p["maml"], *sinusoid(), task="nope")),
    api("adapt-label-huge", 2, "label|class", lambda p: mtl_deploy.adapt(p["digits"], *support(p, "digits_label_huge"))),
    api("export-batch-sizes-empty", 2, "batch", lambda p: mtl_deploy.export(p["ckpt"], p["outs"] / "e", batch_sizes=[])),
    api("export-batch-sizes-zero", 2, "batch", lambda p: mtl_deploy.export(p["ckpt"], p["outs"] / "e", batch_sizes=[0])),
    api("export-batch-sizes-negative", 2, "batch",
        lambda p: mtl_deploy.export(p["ckpt"], p["outs"] / "e", batch_sizes=[4, -1])),
    api("export-atol-nan", 2, "atol|tolerance",
        lambda p: mtl_deploy.export(p["ckpt"], p["outs"] / "e", atol=float("nan"))),
    api("export-out-user-dir", 2, "{user}", lambda p: mtl_deploy.export(p["ckpt"], p["user"])),
    api("export-out-is-the-input", 2, "{ckpt}", lambda p: mtl_deploy.export(p["ckpt"], p["ckpt"])),
    api("export-nan-sample-inputs", 2, "nan", lambda p: mtl_deploy.export(
        p["ckpt"], p["outs"] / "e", sample_inputs=torch.full((4, FEATURES), float("nan")))),
    api("export-string-sample-inputs", 2, "numeric|dtype|number",
        lambda p: mtl_deploy.export(p["ckpt"], p["outs"] / "e", sample_inputs=p["x_strings"])),
    api("export-triton-name-with-quote", 2, "name",
        lambda p: mtl_deploy.export(p["ckpt"], p["outs"] / "t", format="triton", triton_name='a"b')),
    api("export-tampered-width", 1, "hidden|architecture|weights",
        lambda p: mtl_deploy.export(p["wide_ckpt"], p["outs"] / "e")),
    api("predictor-a-checkpoint", 2, "export", lambda p: Predictor(p["ckpt"])),
    api("predictor-torchscript-export", 2, "torchscript", lambda p: Predictor(p["torchscript"]).predict(rows())),
    api("predictor-corrupt-manifest", 1, "corrupt", lambda p: Predictor(p["corrupt_manifest"])),
    api("predictor-manifest-missing-fields", 1, "manifest", lambda p: Predictor(p["hollow_manifest"]).predict(rows())),
    api("predictor-artifact-relative-escape", 1, "artifact|outside", lambda p: Predictor(p["escape_relative"])),
    api("predictor-artifact-absolute-path", 1, "artifact|outside", lambda p: Predictor(p["escape_absolute"])),
    api("predictor-string-rows", 2, "numeric|dtype|number", lambda p: Predictor(p["onnx"]).predict(rows().astype(str))),
    api("predictor-nan-rows", 2, "nan", lambda p: Predictor(p["onnx"]).predict(np.full((2, FEATURES), np.nan))),
    api("predictor-wrong-width", 2, "shape", lambda p: Predictor(p["onnx"]).predict(np.ones((2, 7)))),
    api("predictor-routed-task-ids-out-of-range", 2, "task_ids",
        lambda p: Predictor(p["routed"]).predict(np.ones((3, 6)), task_ids=[0, 1, 99])),
    api("predictor-routed-task-ids-fractions", 2, "task_ids",
        lambda p: Predictor(p["routed"]).predict(np.ones((3, 6)), task_ids=[0.5, 1, 0])),
    api("predictor-adapter-predict-before-adapt", 2, "adapt", lambda p: Predictor(p["adapter"]).predict(rows())),
    api("fewshot-targets-nan", 2, "nan",
        lambda p: FewShotAdapter(p["adapter"]).adapt(sinusoid()[0], np.full((10, 1), np.nan))),
    api("fewshot-targets-inf", 2, "inf|finite",
        lambda p: FewShotAdapter(p["adapter"]).adapt(sinusoid()[0], np.full((10, 1), np.inf))),
    api("fewshot-targets-wider-than-head", 2, "support_y|target",
        lambda p: FewShotAdapter(p["adapter"]).adapt(sinusoid()[0], np.ones((10, 3)))),
    api("fewshot-string-rows", 2, "numeric|dtype|number",
        lambda p: FewShotAdapter(p["adapter"]).adapt(np.array([["a"]] * 10), np.ones((10, 1)))),
    api("fewshot-fewer-labels", 2, "label|rows",
        lambda p: FewShotAdapter(p["adapter"]).adapt(sinusoid()[0], np.ones((7, 1)))),
    api("fewshot-query-nan", 2, "nan",
        lambda p: FewShotAdapter(p["adapter"]).adapt(*sinusoid()).predict(np.full((3, 1), np.nan))),
    api("fewshot-on-an-onnx-export", 2, "adapter", lambda p: FewShotAdapter(p["onnx"])),
    api("fewshot-artifact-relative-escape", 1, "artifact|outside", lambda p: FewShotAdapter(p["adapter_escape"])),
    api("fewshot-corrupt-manifest", 1, "corrupt", lambda p: FewShotAdapter(p["corrupt_manifest"])),
    api("fewshot-label-huge", 2, "label|class",
        lambda p: FewShotAdapter(p["protonet_adapter"]).adapt(*support(p, "digits_label_huge"))),
    api("fewshot-label-negative", 2, "label|class",
        lambda p: FewShotAdapter(p["protonet_adapter"]).adapt(*support(p, "digits_label_negative"))),
    api("fewshot-label-fraction", 2, "label|class",
        lambda p: FewShotAdapter(p["protonet_adapter"]).adapt(*support(p, "digits_label_fraction"))),
    api("fewshot-labels-empty", 2, "empty|no |0|label", lambda p: FewShotAdapter(p["protonet_adapter"]).adapt(
        np.zeros((0, 1, 8, 8), np.float32), np.zeros(0, np.int64))),
    *[api(f"fewshot-task-file-{name}", 2, says, lambda p, name=name: FewShotAdapter(p["protonet_adapter"]).load(
        p[f"task_{name}"])) for name, says in [
        ("truncated", "task file"), ("garbage", "task file"), ("npy", "one float32 array"),
        ("pickled", "pickle|object"), ("wrong_shape", "prototypes"), ("wrong_dtype", "float64"),
        ("nan", "nan"), ("missing_array", "prototypes"), ("newer", "newer"), ("not_a_task", "not an mtl_deploy task"),
        ("other_model", "another model")]],
    api("fewshot-task-file-missing", 2, "does not exist",
        lambda p: FewShotAdapter(p["protonet_adapter"]).load(p["missing"])),
    api("fewshot-task-file-saved-over-a-directory", 2, "directory",
        lambda p: FewShotAdapter(p["protonet_adapter"]).load(p["task"]).save(p["user"])),
    api("predict-file-output-under-a-file", 1, "a_file",
        lambda p: predict_file(p["onnx"], p["rows_npy"], output_path=p["a_file"] / "p.npz")),
    api("predict-file-input-missing", 2, "does not exist", lambda p: predict_file(p["onnx"], p["missing"])),
    api("verify-edited-model-atol-1e9", 1, "parity", lambda p: verify_export(p["tampered_atol"], p["ckpt"])),
    api("verify-edited-model-no-batches", 1, "parity", lambda p: verify_export(p["tampered_batches"], p["ckpt"])),
    api("verify-atol-nan", 2, "atol|tolerance", lambda p: verify_export(p["onnx"], p["ckpt"], atol=float("nan"))),
    api("verify-artifact-relative-escape", 1, "artifact|outside", lambda p: verify_export(p["escape_relative"])),
    api("verify-other-weights", 2, "other weights", lambda p: verify_export(p["onnx"], p["maml"])),
    api("config-epochs-negative", 2, "epochs", lambda p: resolve_config(p["cfg_epochs_negative"])),
    api("config-override-epochs-negative", 2, "epochs",
        lambda p: resolve_config(preset="synthetic-related", overrides={"train.epochs": -3})),
    api("config-override-lr-nan", 2, "lr",
        lambda p: resolve_config(preset="synthetic-related", overrides={"train.lr": float("nan")})),
    api("config-override-lr-string", 2, "lr",
        lambda p: resolve_config(preset="synthetic-related", overrides={"train.lr": "fast"})),
    api("config-meta-inner-lr-nan", 2, "inner_lr", lambda p: resolve_config(p["cfg_meta_inner_lr_nan"])),
    api("config-preset-unknown", 2, "nope", lambda p: resolve_config(preset="nope")),
]

ROWS = [*CONFIG_ROWS, *TRAIN_ROWS, *ADAPT_ROWS, *EVALUATE_AND_ANALYZE_ROWS, *EXPORT_ROWS, *VERIFY_INSPECT_ROWS,
        *PREDICT_ROWS, *DEMO_ROWS, *API_ROWS]

# Each command that writes, with good inputs, aimed at a full or a read-only disk ({disk}):
# a failure (exit 1). Bad inputs aimed there still say what is wrong with them (exit 2).
DISK_ROWS = [
    cli("export-onnx", 1, "{disk}", "export", "{ckpt}", "--out", "{disk}/e"),
    cli("export-pt2", 1, "{disk}", "export", "{ckpt}", "--format", "pt2", "--out", "{disk}/e", process=True),
    cli("export-torchscript", 1, "{disk}", "export", "{ckpt}", "--format", "torchscript", "--out", "{disk}/e",
        process=True),
    cli("export-triton", 1, "{disk}", "export", "{ckpt}", "--format", "triton", "--out", "{disk}/repo"),
    cli("export-adapter", 1, "{disk}", "export", "{maml}", "--format", "adapter", "--out", "{disk}/e"),
    cli("train", 1, "{disk}", "train", "{cfg_good}", "--out", "{disk}/run"),
    cli("train-meta", 1, "{disk}", "train", "--preset", "sinusoid-maml", "--iterations", "2", "--out", "{disk}/run"),
    cli("adapt", 1, "{disk}", *MAML_ADAPT, "--out", "{disk}/a"),
    cli("analyze", 1, "{disk}", *ANALYZE, "--out", "{disk}/r"),
    cli("predict-csv", 1, "{disk}", *PREDICT, "{rows_npy}", "--output", "{disk}/p.csv"),
    cli("predict-npz", 1, "{disk}", *PREDICT, "{rows_npy}", "--output", "{disk}/p.npz"),
    cli("demo", 1, "{disk}", "demo", "--out", "{disk}/d"),
    cli("adapt-lr-nan", 2, "lr", *MAML_ADAPT, "--out", "{disk}/a", "--lr", "nan"),
    cli("export-atol-nan", 2, "atol|tolerance", "export", "{ckpt}", "--atol", "nan", "--out", "{disk}/e"),
    cli("predict-input-nan", 2, "nan", *PREDICT, "{rows_nan}", "--output", "{disk}/p.csv"),
    api("save", 1, "{disk}", lambda p: mtl_deploy.save(mtl_deploy.load(p["ckpt"]), p["disk"] / "s")),
    api("export", 1, "{disk}", lambda p: mtl_deploy.export(p["ckpt"], p["disk"] / "e")),
    api("predict-file", 1, "{disk}", lambda p: predict_file(p["onnx"], p["rows_npy"], output_path=p["disk"] / "p.npz")),
    api("task-file", 1, "{disk}",
        lambda p: FewShotAdapter(p["protonet_adapter"]).load(p["task"]).save(p["disk"] / "t.npz")),
]

# Every export format goes through inspect and verify, or is refused in one line.
READ_BACK_ROWS = [
    cli("inspect-pt2", 0, "", "inspect", "{pt2}"),
    cli("inspect-torchscript", 0, "", "inspect", "{torchscript}"),
    cli("inspect-adapter", 0, "", "inspect", "{adapter}"),
    cli("inspect-routed", 0, "", "inspect", "{routed}"),
    cli("verify-adapter", 0, "", "verify", "{adapter}"),
    cli("verify-adapter-with-its-checkpoint", 0, "", "verify", "{adapter}", "--checkpoint", "{maml}"),
    cli("verify-metric-adapter-with-its-checkpoint", 0, "", "verify", "{protonet_adapter}", "--checkpoint",
        "{protonet}"),
    cli("verify-routed-with-its-checkpoint", 0, "", "verify", "{routed}", "--checkpoint", "{routed_ckpt}"),
    cli("verify-pt2", READS_BACK, "", "verify", "{pt2}"),
    cli("verify-pt2-with-its-checkpoint", READS_BACK, "", "verify", "{pt2}", "--checkpoint", "{ckpt}"),
    cli("verify-torchscript", READS_BACK, "", "verify", "{torchscript}"),
    cli("verify-torchscript-with-its-checkpoint", READS_BACK, "", "verify", "{torchscript}", "--checkpoint", "{ckpt}"),
]


# -- the workspace and its fingerprint ------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bad-input") / "ws"
    paths = build_workspace(root)
    shutil.copytree(root, root.with_name("pristine"), symlinks=True)
    return paths


def fingerprint(*roots: Path) -> dict[str, tuple]:
    """(mode, kind, size and sha256 | link target) of every path under `roots`, hidden
    files, directories and symbolic links included."""
    entries = {}
    for root in roots:
        for directory, folders, files in os.walk(root):
            for name in folders + files:
                path = os.path.join(directory, name)
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode):
                    entries[path] = ("link", os.readlink(path))
                elif stat.S_ISDIR(info.st_mode):
                    entries[path] = ("dir", stat.S_IMODE(info.st_mode))
                else:
                    with open(path, "rb") as handle:
                        digest = hashlib.sha256(handle.read()).hexdigest()
                    entries[path] = ("file", stat.S_IMODE(info.st_mode), info.st_size, digest)
    return entries


def changes(before: dict, after: dict) -> list[str]:
    added = [f"+{p}" for p in sorted(after.keys() - before.keys())]
    removed = [f"-{p}" for p in sorted(before.keys() - after.keys())]
    changed = [f"~{p}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]]
    return added + removed + changed


def restore(paths: dict) -> None:
    """Put the workspace back as built, after a row that changed it."""
    root = paths["root"]
    shutil.rmtree(root)
    shutil.copytree(root.with_name("pristine"), root, symlinks=True)


class Allocated(BaseException):
    """A bad input got as far as allocating a large tensor (not an Exception, so that no
    handler in the library can turn it into a message)."""


@pytest.fixture
def no_large_allocations(monkeypatch):
    """Bad inputs are refused before memory is spent on them: torch.empty (which builds
    every layer's weights) refuses anything over LARGEST_TENSOR elements off the meta device."""
    real = torch.empty

    def empty(*size, **kwargs):
        shape = kwargs.get("size", size[0] if len(size) == 1 and not isinstance(size[0], int) else size)
        on_meta = str(kwargs.get("device") or torch.get_default_device()) == "meta"
        try:
            elements = math.prod(int(s) for s in shape)
        except (TypeError, ValueError):
            elements = 0
        if not on_meta and elements > LARGEST_TENSOR:
            raise Allocated(f"torch.empty({list(shape)}) was called before the input was refused")
        return real(*size, **kwargs)

    monkeypatch.setattr(torch, "empty", empty)


@pytest.fixture
def quick_demo(monkeypatch):
    """`demo` without its baseline comparisons (minutes of training), so that the rows
    reach where it writes."""
    monkeypatch.setattr(demo, "compare_with_single_task", lambda preset, progress, seed=0: (
        [], resolve_config(preset=preset, overrides={"train.epochs": 1, "train.seed": seed})))


def expand(text: str, paths: dict) -> str:
    return text.format_map(paths)


def run_row(row: Row, paths: dict) -> list[str]:
    """Run one row in the workspace's `cwd` and return what is wrong with its answer; a
    warning would be a second line on the user's terminal."""
    cwd = os.getcwd()
    os.chdir(paths["cwd"])
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if row.call is not None:
                problems = api_problems(row, paths)
            elif row.process:
                problems = cli_problems(row, run_process([expand(a, paths) for a in row.args]), paths)
            elif row.runtime:
                problems = cli_problems(row, run_runtime([expand(a, paths) for a in row.args]), paths)
            else:
                problems = cli_problems(row, runner.invoke(app, [expand(a, paths) for a in row.args]), paths)
    finally:
        os.chdir(cwd)
    return problems + [f"a warning: {w.category.__name__}: {str(w.message)[:200]!r}" for w in caught
                       if not issubclass(w.category, HIDDEN_WARNINGS)]


@dataclass
class ProcessResult:
    """What `runner.invoke` returns, for a command run in a child process."""

    exit_code: int
    stderr: str
    output: str
    exception: BaseException | None = None


def run_process(args: list[str]) -> ProcessResult:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run([sys.executable, "-m", "mtl_deploy", *args], capture_output=True, text=True, timeout=300,
                          env={**env, "PYTHONPATH": str(Path(__file__).parents[1])})
    return ProcessResult(done.returncode, done.stderr, done.stdout + done.stderr)


def run_runtime(args: list[str]) -> ProcessResult:
    """The mtl-deploy-runtime command, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = runtime_main(args)
        except SystemExit as exit:  # argparse's own exits: --help, usage errors
            code = exit.code
    return ProcessResult(code, err.getvalue(), out.getvalue() + err.getvalue())


def cli_problems(row: Row, result, paths: dict) -> list[str]:
    output = result.output
    shown = repr(output.strip()[:300])
    if result.exit_code < 0:
        return [f"killed by {signal.Signals(-result.exit_code).name}: {output.strip()[-300:]!r}"]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return [f"raised {type(result.exception).__name__}: {str(result.exception).strip()[:200]!r}"]
    problems = [] if result.exit_code == row.code or (row.code == READS_BACK and result.exit_code in (0, 2)) else [
        f"exit {result.exit_code} (documented: {row.code}): {shown}"]
    if "Traceback" in output:
        problems.append(f"a traceback: {shown}")
    if result.exit_code != 0:
        problems += line_problems(row, result.stderr, paths, output)
    return problems


def line_problems(row: Row, stderr: str, paths: dict, output: str) -> list[str]:
    lines = [line for line in output.splitlines() if line.strip()]
    if len(lines) != 1 or not lines[0].startswith("error: ") or lines[0].strip() != stderr.strip():
        return [f"{len(lines)} lines, not one 'error: ' line on stderr: {output.strip()[:300]!r}"]
    return message_problems(row, lines[0], paths)


def message_problems(row: Row, message: str, paths: dict) -> list[str]:
    problems = []
    if len(message) > LONGEST_MESSAGE:
        problems.append(f"a message of {len(message)} characters: {message[:200]!r}...")
    wanted = [expand(s, paths).lower() for s in row.says.split("|") if s] if row.code != READS_BACK else []
    if wanted and not any(w in message.lower() for w in wanted):
        problems.append(f"the message names none of {wanted}: {message[:300]!r}")
    return problems


def api_problems(row: Row, paths: dict) -> list[str]:
    try:
        row.call(paths)
    except MtlDeployError as err:
        message = str(err)
        problems = [] if err.exit_code == row.code else [
            f"{type(err).__name__} (exit code {err.exit_code}, documented {row.code}): {message[:300]!r}"]
        if not message.strip() or "\n" in message.strip():
            problems.append(f"not one line: {message[:300]!r}")
        return problems + message_problems(row, message, paths)
    except Exception as err:  # noqa: BLE001  the point: no raw error may reach the caller
        return [f"raw {type(err).__module__}.{type(err).__name__}: {str(err).strip()[:200]!r}"]
    return ["no error raised"]


def check_row(row: Row, paths: dict, roots: list[Path]) -> None:
    before = fingerprint(*roots)
    problems = run_row(row, paths)
    touched = changes(before, fingerprint(*roots))
    if touched:
        restore(paths)
        problems.append(f"{len(touched)} paths written or changed: {', '.join(touched[:4])}")
    assert not problems, "; ".join(problems)


# -- the tests -------------------------------------------------------------------------


def test_the_table_covers_every_command_and_the_api():
    assert len(ROWS) >= 80
    commands = {param.values[0].args[0] for param in ROWS if param.values[0].call is None}
    assert commands == {"train", "adapt", "evaluate", "analyze", "export", "verify", "inspect", "predict", "demo"}
    formats = {args[args.index("--format") + 1] for args in (param.values[0].args for param in ROWS)
               if "--format" in args}
    assert {"pt2", "torchscript", "aoti", "adapter", "triton"} <= formats  # onnx is the default
    assert len(ROWS) == len({param.id for param in ROWS})


@pytest.mark.usefixtures("no_large_allocations", "quick_demo")
@pytest.mark.parametrize("row", [p.values[0] for p in ROWS], ids=[p.id for p in ROWS])
def test_bad_input_is_one_line_and_touches_nothing(row, workspace):
    check_row(row, workspace, [workspace["root"]])


@pytest.mark.usefixtures("no_large_allocations")
@pytest.mark.parametrize("row", [dataclasses.replace(p.values[0], runtime=True) for p in PREDICT_ROWS],
                         ids=[f"runtime-{p.id}" for p in PREDICT_ROWS])
def test_the_runtime_command_refuses_what_predict_refuses(row, workspace):
    check_row(row, workspace, [workspace["root"]])


@pytest.mark.usefixtures("no_large_allocations")
@pytest.mark.parametrize("row", [p.values[0] for p in READ_BACK_ROWS], ids=[p.id for p in READ_BACK_ROWS])
def test_every_export_format_reads_back_or_is_refused_in_one_line(row, workspace):
    check_row(row, workspace, [workspace["root"]])


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    """Two 2 MB tmpfs mounts: one filled to its last page, one read-only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the full-disk rows run as root only")
    base = tmp_path_factory.mktemp("disks")
    mounts = {"full": base / "full", "readonly": base / "readonly"}
    mounted = []
    try:
        for name, options in (("full", "size=2m"), ("readonly", "size=2m,ro")):
            mounts[name].mkdir()
            result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mounts[name])],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
            mounted.append(mounts[name])
        filler = os.open(mounts["full"] / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while os.write(filler, b"\0" * 4096):
                pass
        except OSError:  # full to the last page: even a lock file's pid or a small csv cannot be written
            pass
        finally:
            os.close(filler)
        yield mounts
    finally:
        for mount in reversed(mounted):
            if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
                subprocess.run(["umount", "-l", str(mount)], check=False)  # busy: detach it anyway


@pytest.mark.usefixtures("no_large_allocations", "quick_demo")
@pytest.mark.parametrize("disk", ["full", "readonly"])
@pytest.mark.parametrize("row", [p.values[0] for p in DISK_ROWS], ids=[p.id for p in DISK_ROWS])
def test_a_full_or_read_only_disk_is_one_line_and_touches_nothing(row, disk, workspace, disks):
    paths = {**workspace, "disk": disks[disk]}
    try:
        check_row(row, paths, [workspace["root"], disks[disk]])
    finally:  # what a failed row left there must not decide the next row
        for leftover in disks[disk].iterdir():
            if leftover.name != "filler":
                shutil.rmtree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()


def test_csv_rows_are_read_as_written(workspace, tmp_path):
    """A header is optional and a UTF-8 byte-order mark is not a header; a one-feature
    model takes one column of N rows as N rows."""
    x = np.load(workspace["rows_npy"])
    want = Predictor(workspace["onnx"]).predict(x)
    bom = tmp_path / "bom.csv"
    bom.write_text("\ufeff" + "\n".join(",".join(map(repr, map(float, r))) for r in x) + "\n", encoding="utf-8")
    got = predict_file(workspace["onnx"], bom, logits=True)
    columns = prediction_table(want, Predictor(workspace["onnx"]).tasks, logits=True)
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in columns.items()}
    for name in columns:
        np.testing.assert_allclose(got[name], columns[name], rtol=1e-6, atol=1e-6)
    column = np.linspace(-1, 1, 6, dtype=np.float32)[:, None]
    one = Predictor(workspace["one_feature"]).predict(column)["y"]
    for header in ("", "x\n"):
        path = tmp_path / f"one{len(header)}.csv"
        path.write_text(header + "\n".join(f"{v:.6f}" for v in column[:, 0]) + "\n")
        np.testing.assert_allclose(predict_file(workspace["one_feature"], path)["y"], one[:, 0], rtol=1e-5, atol=1e-6)


def test_a_refused_second_run_leaves_the_live_one_alone(tmp_path):
    """Two `train` runs into one --out: the second is refused in one line and touches
    nothing; the first carries on (here until Ctrl-C, which it answers cleanly)."""
    config = tmp_path / "long.json"
    config.write_text('{"data": {"synthetic": {"n_rows": 200}}, "model": {"trunk": {"hidden": [8]}},'
                      ' "train": {"epochs": 100000, "patience": 100000}}')
    out, partial = tmp_path / "run", tmp_path / "run.partial"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    first = subprocess.Popen([sys.executable, "-m", "mtl_deploy", "train", str(config), "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**env, "OMP_NUM_THREADS": "1"})
    metrics = partial / "metrics.jsonl"

    def epochs_logged(more_than: int) -> int:
        """Waits until the first run has logged more than `more_than` epochs: it is in its
        training loop (past its imports, which a Ctrl-C would interrupt differently)."""
        deadline = time.monotonic() + 300
        while first.poll() is None:
            logged = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
            if logged > more_than:
                return logged
            assert time.monotonic() < deadline, "the first run did not get going"
            time.sleep(0.05)
        raise AssertionError(first.communicate()[1][-2000:])

    try:
        logged = epochs_logged(0)
        second = runner.invoke(app, ["train", str(config), "--out", str(out)])
        assert second.exit_code == 2, second.output
        assert len(second.output.strip().splitlines()) == 1 and second.stderr.startswith("error: ")
        assert "Traceback" not in second.output
        assert partial.is_dir() and not out.exists()
        epochs_logged(logged)  # the first run keeps training and writing into its directory
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
