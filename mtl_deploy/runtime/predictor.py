"""Serve an export directory with ONNX Runtime and numpy only: no torch import anywhere in
this package, so production installs `mtl-deploy[runtime]` without PyTorch.

The manifest names the input, every output and the task each output belongs to; inputs
are checked against it before they reach the session.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mtl_deploy.errors import InputError, MtlDeployError, numeric_array


def session_for(path: Path, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session with all graph optimisations; small graphs gain nothing from many
    threads, so the default is the core count capped at 4."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads if threads is not None else min(4, os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ONNX Runtime raises its own types for a corrupt or foreign file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise MtlDeployError(f"ONNX Runtime cannot load {path} ({first}); export again") from None


def finite_outputs(outputs: list[np.ndarray]) -> list[np.ndarray]:
    """The session's outputs, refused when the model computed NaN or inf from finite inputs."""
    for values in outputs:
        if not np.isfinite(values).all():
            rows = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
            raise MtlDeployError(f"the model computed NaN or inf for {len(rows)} row(s) (first: {rows[0]}); "
                                 "check those inputs' scale against the training data")
    return outputs


EXPORT_FORMATS = ("mtl_deploy.export", "mtl_deploy.adapter")


def read_export_manifest(export_dir: str | Path) -> dict:
    """The manifest.json of an export directory (json only, no torch): the one reader that
    `predict`, `verify`, `inspect` and the adapter use, so each answers a bad one alike."""
    export_dir = Path(export_dir)
    manifest_path = export_dir / "manifest.json"
    if not export_dir.exists():
        raise InputError(f"{str(export_dir)!r} does not exist; give an export directory")
    if not manifest_path.is_file():
        raise InputError(f"{export_dir} is not an export directory: it has no manifest.json")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        raise MtlDeployError(f"{manifest_path} is corrupt ({str(err)[:200]}); export again") from None
    kind = manifest.get("format") if isinstance(manifest, dict) else None
    if kind == "mtl_deploy.checkpoint":
        raise InputError(f"{export_dir} is a checkpoint, not an export; export it first: "
                         f"mtl-deploy export {export_dir} --out EXPORT_DIR")
    if kind not in EXPORT_FORMATS:
        raise MtlDeployError(f"{manifest_path} is not an mtl_deploy export manifest (format {str(kind)[:80]!r})")
    if not isinstance(manifest.get("artifact"), str) or not isinstance(manifest.get("inputs"), list):
        raise MtlDeployError(f"{manifest_path} is corrupt (no artifact or inputs); export again")
    return manifest


def artifact_path(export_dir: str | Path, manifest: dict) -> Path:
    """The model file the manifest names, which must be a plain file inside `export_dir`:
    a name like `../x`, an absolute path or a link leading out is refused, never followed."""
    export_dir = Path(export_dir)
    name = manifest["artifact"]
    path = export_dir / name
    inside = Path(os.path.realpath(path)).parent == Path(os.path.realpath(export_dir))
    if Path(name).name != name or name in ("", ".", "..") or not inside:
        raise MtlDeployError(f"{export_dir / 'manifest.json'} names the artifact {name[:80]!r} outside its "
                             "directory; refusing to read it: export again")
    if not path.is_file():
        raise MtlDeployError(f"{path} is missing; export again")
    return path


class Predictor:
    """`Predictor(export_dir).predict(x)` -> {task: array}, or one task's array.
    On an adapter export, `Predictor(adapter_dir).adapt(support_x, support_y)` returns a
    predictor bound to the task the support set shows."""

    def __init__(self, export_dir: str | Path, threads: int | None = None):
        export_dir = Path(export_dir)
        self.manifest = read_export_manifest(export_dir)
        self.export_dir = export_dir
        if self.manifest.get("format") == "mtl_deploy.adapter":
            from mtl_deploy.runtime.adapter import FewShotAdapter  # it builds on this module's session_for

            self.adapter = FewShotAdapter(export_dir, threads)
            return  # nothing to predict before adapting
        if self.manifest.get("artifact_format", "onnx") != "onnx":
            raise InputError(f"{export_dir} is a {self.manifest['artifact_format']} export; the runtime serves ONNX "
                             f"exports (mtl-deploy export CKPT --format onnx), load {self.manifest['artifact']} with torch")
        self.session = session_for(artifact_path(export_dir, self.manifest), threads)
        self.input = self.manifest["inputs"][0]  # routed graphs also take task_id
        self.tasks = self.manifest["tasks"]
        self.routed = self.manifest.get("routed", False)

    @property
    def row_shape(self) -> list[int]:
        return self.input["shape"][1:]

    def check(self, x) -> np.ndarray:
        x = numeric_array(x, "inputs")
        if list(x.shape[1:]) != list(self.row_shape) and list(x.shape) == list(self.row_shape):
            x = x[None]  # one row without its batch axis
        if list(x.shape[1:]) != list(self.row_shape):
            raise InputError(f"inputs have rows of shape {list(x.shape[1:])}; this model takes "
                             f"{self.row_shape} (input {self.input['name']!r})")
        if len(x) == 0:
            raise InputError("inputs have no rows; give at least one")
        return np.ascontiguousarray(x, dtype=self.input["dtype"])

    def adapt(self, support_x, support_y):
        """Few-shot adaptation through the adapter graph (see `FewShotAdapter`)."""
        if self.manifest.get("format") != "mtl_deploy.adapter":
            raise InputError(f"{self.export_dir} is not an adapter export; export with --format adapter to adapt")
        return self.adapter.adapt(support_x, support_y)

    def predict(self, x, task: str | None = None, task_ids=None):
        """All tasks' outputs as a dict, or `task`'s array. A routed export also takes
        `task_ids` (one task index per row, see the manifest's `id`s) for a mixed batch."""
        if self.manifest.get("format") == "mtl_deploy.adapter":
            raise InputError("this is an adapter export: call adapt(support_x, support_y) first, then predict")
        if task is not None and task not in self.tasks:
            raise InputError(f"unknown task {task!r}; this model has {sorted(self.tasks)}")
        x = self.check(x)
        if self.routed:
            return self._predict_routed(x, task, task_ids)
        names = [self.tasks[task]["output"]] if task else [o["name"] for o in self.manifest["outputs"]]
        outputs = dict(zip(names, finite_outputs(self.session.run(names, {self.input["name"]: x}))))
        if task:
            return outputs[self.tasks[task]["output"]]
        return {name: outputs[spec["output"]] for name, spec in self.tasks.items()}

    def _predict_routed(self, x: np.ndarray, task: str | None, task_ids) -> np.ndarray:
        if (task is None) == (task_ids is None):
            raise InputError("a routed export needs either task (one task for every row) or task_ids (one per row)")
        ids = np.full(len(x), self.tasks[task]["id"]) if task else np.asarray(task_ids)
        if ids.shape != (len(x),) or ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= len(self.tasks):
            raise InputError(f"task_ids must be {len(x)} integers in [0, {len(self.tasks) - 1}]")
        output = self.manifest["outputs"][0]["name"]
        return finite_outputs(self.session.run([output], {self.input["name"]: x, "task_id": ids.astype(np.int64)}))[0]
