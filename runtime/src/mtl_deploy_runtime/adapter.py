"""Few-shot adaptation on a device with nothing but ONNX Runtime and numpy: the adapter
graph (`export(..., format="adapter")`) adapts on the support set inside the graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtl_deploy_runtime.errors import InputError, bounded, numeric_array
from mtl_deploy_runtime.predictor import artifact_path, finite_outputs, read_export_manifest
from mtl_deploy_runtime.session import session_for


class FewShotAdapter:
    """`FewShotAdapter(adapter_dir).adapt(support_x, support_y).predict(query_x)`; `device`
    and `providers` as on `Predictor`."""

    def __init__(self, export_dir: str | Path, threads: int | None = None, *, device: str = "auto"):
        export_dir = Path(export_dir)
        self.manifest = read_export_manifest(export_dir)
        if self.manifest.get("format") != "mtl_deploy.adapter":
            raise InputError(f"{export_dir} is not an adapter export; export with --format adapter")
        self.session = session_for(artifact_path(export_dir, self.manifest), device, threads)
        self.row_shape = self.manifest["inputs"][0]["shape"][1:]
        self.task = self.manifest["task"]

    @property
    def providers(self) -> list[str]:
        """The execution providers the session runs on, the device's own first."""
        return self.session.get_providers()

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
        return AdaptedTask(self, x, y)


class AdaptedTask:
    """A predictor bound to one support set: each call runs the adapter graph on it."""

    def __init__(self, adapter: FewShotAdapter, support_x: np.ndarray, support_y: np.ndarray):
        self.adapter, self.support_x, self.support_y = adapter, support_x, support_y

    def predict(self, query_x) -> np.ndarray:
        feeds = {"support_x": self.support_x, "support_y": self.support_y,
                 "query_x": self.adapter.check_rows(query_x, "query_x")}
        return finite_outputs(self.adapter.session.run(["query_pred"], feeds))[0]
