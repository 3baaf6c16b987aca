"""Serve an export directory with ONNX Runtime and numpy only: no torch import anywhere in
this package, so production installs mtl-deploy-runtime without PyTorch.

The manifest names the input, every output and the task each output belongs to; inputs
are checked against it before they reach the session.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mtl_deploy_runtime.errors import InputError, MtlDeployError, axis_clash, numeric_array
from mtl_deploy_runtime.session import session_for


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


def require_onnx(export_dir: str | Path, manifest: dict) -> None:
    """This runtime runs ONNX graphs; a PyTorch or ExecuTorch program is one line saying where it runs."""
    kind = manifest.get("artifact_format", "onnx")
    if kind != "onnx":
        runs_in = "ExecuTorch's runtime" if kind == "executorch" else "PyTorch"
        raise InputError(f"{export_dir} holds a {kind} program ({manifest.get('artifact')}), which runs in {runs_in}; "
                         "this runtime serves ONNX exports (mtl-deploy export CKPT --format onnx, or adapter)")


def artifact_path(export_dir: str | Path, manifest: dict, name: str | None = None) -> Path:
    """The model file the manifest names (`name`, else its artifact), which must be a plain
    file inside `export_dir`: a name like `../x`, an absolute path or a link leading out is
    refused, never followed."""
    export_dir = Path(export_dir)
    name = manifest["artifact"] if name is None else name
    if not isinstance(name, str):
        raise MtlDeployError(f"{export_dir / 'manifest.json'} is corrupt (a graph's file name); export again")
    path = export_dir / name
    inside = Path(os.path.realpath(path)).parent == Path(os.path.realpath(export_dir))
    if Path(name).name != name or name in ("", ".", "..") or not inside:
        raise MtlDeployError(f"{export_dir / 'manifest.json'} names the artifact {name[:80]!r} outside its "
                             "directory; refusing to read it: export again")
    if not path.is_file():
        raise MtlDeployError(f"{path} is missing; export again")
    return path


class Predictor:
    """`Predictor(export_dir).predict(x)` -> {task: array}, or one task's array; `x` is an
    array, or a dict of arrays by input name for a model of several inputs (token ids and
    attention mask, an image and a feature vector).
    On an adapter export, `Predictor(adapter_dir).adapt(support_x, support_y)` returns a
    predictor bound to the task the support set shows.
    `device` is "auto" (CUDA when the installed ONNX Runtime has it, else the CPU), "cpu",
    "cuda" or "tensorrt"; a device whose provider is missing or does not start is an error,
    never a quiet CPU fallback (see `session_for`). `providers` says what runs."""

    def __init__(self, export_dir: str | Path, threads: int | None = None, *, device: str = "auto"):
        export_dir = Path(export_dir)
        self.manifest = read_export_manifest(export_dir)
        self.export_dir = export_dir
        require_onnx(export_dir, self.manifest)
        if self.manifest.get("format") == "mtl_deploy.adapter":
            from mtl_deploy_runtime.adapter import FewShotAdapter  # it builds on this module's manifest readers

            self.adapter = FewShotAdapter(export_dir, threads, device=device)
            return  # nothing to predict before adapting
        self.session = session_for(artifact_path(export_dir, self.manifest), device, threads)
        self.inputs = [i for i in self.manifest["inputs"] if i.get("name") != "task_id"]  # routed graphs add task_id
        self.input = self.inputs[0]
        self.tasks = self.manifest["tasks"]
        self.routed = self.manifest.get("routed", False)

    @property
    def providers(self) -> list[str]:
        """The execution providers the session runs on, the device's own first."""
        if self.manifest.get("format") == "mtl_deploy.adapter":
            return self.adapter.providers
        return self.session.get_providers()

    @property
    def row_shape(self) -> list:
        """The first input's shape past the batch axis (axis names where sizes vary)."""
        return self.input["shape"][1:]

    def check(self, x) -> dict[str, np.ndarray]:
        """The graph's feeds from what a caller passed: an array (a model of one input) or
        a dict of arrays by input name, each checked against the manifest."""
        if isinstance(x, dict):
            names = [i["name"] for i in self.inputs]
            unknown, missing = sorted(set(x) - set(names)), [n for n in names if n not in x]
            if unknown or missing:
                raise InputError(f"this model takes inputs {names}; " + (f"missing {missing}" if missing
                                                                         else f"unknown {unknown}"))
            given = dict(x)
        elif len(self.inputs) == 1:
            given = {self.input["name"]: x}
        else:
            raise InputError(f"this model takes {len(self.inputs)} inputs {[i['name'] for i in self.inputs]}; "
                             "pass a dict of arrays by name")
        feeds, sizes = {}, {}
        for entry in self.inputs:
            feeds[entry["name"]] = self._check_input(entry, given[entry["name"]], sizes, one_input=len(self.inputs) == 1)
        return feeds

    @staticmethod
    def _check_input(entry: dict, values, sizes: dict, one_input: bool) -> np.ndarray:
        name, shape = entry["name"], entry["shape"]
        array = numeric_array(values, f"input {name!r}" if not one_input else "inputs")
        fits = lambda a: len(a.shape) == len(shape) and all(  # noqa: E731
            isinstance(d, str) or d == n for d, n in zip(shape[1:], a.shape[1:]))
        if one_input and not fits(array) and len(array.shape) == len(shape) - 1:
            array = array[None]  # one row without its batch axis
        if not fits(array):
            raise InputError(f"input {name!r} has shape {list(array.shape)}; this model takes {shape}"
                             if not one_input else
                             f"inputs have rows of shape {list(array.shape[1:])}; this model takes {shape[1:]} "
                             f"(input {name!r})")
        if len(array) == 0:
            raise InputError("inputs have no rows; give at least one")
        integer = np.dtype(entry["dtype"]).kind in "iu"
        if integer and array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
            raise InputError(f"input {name!r} takes integers ({entry['dtype']}), got fractional values")
        if integer and "range" in entry and (array.min() < entry["range"][0] or array.max() >= entry["range"][1]):
            raise InputError(f"input {name!r} takes values in [{entry['range'][0]}, {entry['range'][1]}), "
                             f"got {array.min()} to {array.max()}")
        if clash := axis_clash(sizes, shape, name, array.shape):
            dim, first, size, here = clash
            raise InputError(f"axis {dim!r} is {size} in input {first!r} but {here} in {name!r}")
        return np.ascontiguousarray(array, dtype=entry["dtype"])

    def adapt(self, support_x, support_y):
        """Few-shot adaptation through the adapter graph (see `FewShotAdapter`)."""
        if self.manifest.get("format") != "mtl_deploy.adapter":
            raise InputError(f"{self.export_dir} is not an adapter export; export with --format adapter to adapt")
        return self.adapter.adapt(support_x, support_y)

    def predict(self, x, task: str | None = None, task_ids=None):
        """All tasks' outputs as a dict, or `task`'s array. A routed export also takes
        `task_ids` (one task index per row, see the manifest's `id`s) for a mixed batch; its
        rows are as wide as the widest head, a narrower task's row in its first `out_dim`
        columns, zeros after."""
        if self.manifest.get("format") == "mtl_deploy.adapter":
            raise InputError("this is an adapter export: call adapt(support_x, support_y) first, then predict")
        if task is not None and task not in self.tasks:
            raise InputError(f"unknown task {task!r}; this model has {sorted(self.tasks)}")
        feeds = self.check(x)
        if self.routed:
            return self._predict_routed(feeds, task, task_ids)
        names = [self.tasks[task]["output"]] if task else [o["name"] for o in self.manifest["outputs"]]
        outputs = dict(zip(names, finite_outputs(self.session.run(names, feeds))))
        if task:
            return outputs[self.tasks[task]["output"]]
        return {name: outputs[spec["output"]] for name, spec in self.tasks.items()}

    def _predict_routed(self, feeds: dict[str, np.ndarray], task: str | None, task_ids) -> np.ndarray:
        if (task is None) == (task_ids is None):
            raise InputError("a routed export needs either task (one task for every row) or task_ids (one per row)")
        rows = len(feeds[self.input["name"]])
        ids = np.full(rows, self.tasks[task]["id"]) if task else np.asarray(task_ids)
        if ids.shape != (rows,) or ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= len(self.tasks):
            raise InputError(f"task_ids must be {rows} integers in [0, {len(self.tasks) - 1}]")
        output = self.manifest["outputs"][0]["name"]
        values = finite_outputs(self.session.run([output], {**feeds, "task_id": ids.astype(np.int64)}))[0]
        return values[:, :self.tasks[task]["out_dim"]] if task else values  # heads narrower than the widest are padded
