"""Few-shot adaptation on a device with nothing but ONNX Runtime and numpy. An adapter
export (`export(..., format="adapter")`) holds the adaptation as graphs: `adapt.onnx` turns
a support set into the adapted state (prototypes; support embeddings and one-hot labels; or
adapted weights), `predict.onnx` predicts query rows from that state. A task is adapted
once and predicts many times; its state saves to a task file that a later process loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtl_deploy_runtime.errors import InputError, bounded, numeric_array
from mtl_deploy_runtime.predictor import artifact_path, finite_outputs, read_export_manifest, require_onnx
from mtl_deploy_runtime.session import session_for
from mtl_deploy_runtime.task_file import read_task_file, state_spec, write_task_file


class FewShotAdapter:
    """`FewShotAdapter(adapter_dir).adapt(support_x, support_y).predict(query_x)`, and
    `.load(task_file)` for a task adapted and saved before; `device` and `providers` as on
    `Predictor`."""

    def __init__(self, export_dir: str | Path, threads: int | None = None, *, device: str = "auto"):
        export_dir = Path(export_dir)
        self.manifest = read_export_manifest(export_dir)
        if self.manifest.get("format") != "mtl_deploy.adapter":
            raise InputError(f"{export_dir} is not an adapter export; export with --format adapter")
        require_onnx(export_dir, self.manifest)
        if "state" not in self.manifest:
            raise InputError(f"{export_dir} was exported before adapter exports kept adapt.onnx and predict.onnx; "
                             "export it again")
        self.state_names = [entry["name"] for entry in state_spec(self.manifest)]
        graphs = self.manifest["state"]
        self.adapt_session, self.predict_session = (
            session_for(artifact_path(export_dir, self.manifest, graphs.get(half)), device, threads)
            for half in ("adapt", "predict"))
        self.row_shape = self.manifest["inputs"][0]["shape"][1:]
        self.task = self.manifest["task"]

    @property
    def providers(self) -> list[str]:
        """The execution providers the sessions run on, the device's own first."""
        return self.predict_session.get_providers()

    def check_rows(self, x, name: str) -> np.ndarray:
        x = numeric_array(x, name)
        if list(x.shape[1:]) != list(self.row_shape) or len(x) == 0:
            raise InputError(f"{name} must be (rows >= 1, {', '.join(map(str, self.row_shape))}), got {list(x.shape)}")
        return x.astype(np.float32)

    def encode_labels(self, support_y) -> np.ndarray:
        """Class ids -> one-hot rows; regression targets -> (S, out) values."""
        y = numeric_array(support_y, "support_y")
        if y.ndim == 0 or len(y) == 0:
            raise InputError("support_y is empty; give one label (or target row) per support row")
        if self.task["kind"] == "regression":
            width = self.task["out_dim"]
            if y.size != len(y) * width:
                raise InputError(f"support_y must be (rows, {width}) regression targets, got {list(y.shape)}")
            return y.reshape(len(y), width).astype(np.float32)
        if y.ndim != 1 or not np.array_equal(y, np.round(y)):
            raise InputError("support_y must be class ids 0..N-1, one per support row")
        fixed = self.manifest["inputs"][1]["shape"][1]
        # every class needs a support row, so there are never more ways than rows: bounded before allocating
        ways = (int(y.max()) + 1 if 0 <= y.max() < len(y) else len(y) + 1) if fixed == "ways" else fixed
        if y.min() < 0 or y.max() >= ways:
            raise InputError(f"support labels must be class ids in 0..{ways - 1}, got values from "
                             f"{y.min():.0f} to {y.max():.0f}")
        y = y.astype(np.int64)
        missing = np.setdiff1d(np.arange(ways), y)
        if len(missing):
            raise InputError(f"support labels must cover every class 0..{ways - 1}: class(es) "
                             f"{bounded(missing.tolist())} have no support row")
        return np.eye(ways, dtype=np.float32)[y]

    def adapt(self, support_x, support_y) -> "AdaptedTask":
        x = self.check_rows(support_x, "support_x")
        y = self.encode_labels(support_y)
        if len(y) != len(x):
            raise InputError(f"{len(x)} support rows but {len(y)} labels")
        state = finite_outputs(self.adapt_session.run(self.state_names, {"support_x": x, "support_y": y}))
        return AdaptedTask(self, dict(zip(self.state_names, state)))

    def load(self, path: str | Path) -> "AdaptedTask":
        """The task saved at `path` by `AdaptedTask.save`, checked to be this model's."""
        return AdaptedTask(self, read_task_file(path, self.manifest))


class AdaptedTask:
    """One adapted task: its `state` (name -> array: prototypes; support embeddings and
    one-hot labels; or adapted weights), which predicts without the support set."""

    def __init__(self, adapter: FewShotAdapter, state: dict[str, np.ndarray]):
        self.adapter, self.state = adapter, state

    def predict(self, query_x) -> np.ndarray:
        feeds = {"query_x": self.adapter.check_rows(query_x, "query_x"), **self.state}
        return finite_outputs(self.adapter.predict_session.run(["query_pred"], feeds))[0]

    def save(self, path: str | Path) -> Path:
        """Write the state to a task file (`.npz`, a few KB) that `FewShotAdapter.load` reads."""
        return write_task_file(path, self.state, self.adapter.manifest)
