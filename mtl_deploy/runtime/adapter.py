"""Few-shot adaptation on a device with nothing but ONNX Runtime and numpy: the adapter
graph (`export(..., format="adapter")`) adapts on the support set inside the graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtl_deploy.errors import InputError
from mtl_deploy.runtime.predictor import read_export_manifest, session_for


class FewShotAdapter:
    """`FewShotAdapter(adapter_dir).adapt(support_x, support_y).predict(query_x)`."""

    def __init__(self, export_dir: str | Path, threads: int | None = None):
        export_dir = Path(export_dir)
        self.manifest = read_export_manifest(export_dir)
        if self.manifest.get("format") != "mtl_deploy.adapter":
            raise InputError(f"{export_dir} is not an adapter export; export with --format adapter")
        self.session = session_for(export_dir / self.manifest["artifact"], threads)
        self.row_shape = self.manifest["inputs"][0]["shape"][1:]
        self.task = self.manifest["task"]

    def check_rows(self, x, name: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if list(x.shape[1:]) != list(self.row_shape) or len(x) == 0:
            raise InputError(f"{name} must be (rows >= 1, {', '.join(map(str, self.row_shape))}), got {list(x.shape)}")
        if not np.isfinite(x).all():
            raise InputError(f"{name} contains NaN or inf")
        return x

    def encode_labels(self, support_y) -> np.ndarray:
        """Class ids -> one-hot rows; regression targets -> (S, out) values."""
        y = np.asarray(support_y)
        if self.task["kind"] == "regression":
            return y.reshape(len(y), -1).astype(np.float32)
        if y.ndim != 1 or y.dtype.kind not in "iuf" or not np.array_equal(y, np.round(y)):
            raise InputError("support_y must be class ids 0..N-1, one per support row")
        y = y.astype(np.int64)
        fixed = self.manifest["inputs"][1]["shape"][1]
        ways = int(y.max()) + 1 if fixed == "ways" else fixed
        missing = sorted(set(range(ways)) - set(y.tolist()))
        if y.min() < 0 or y.max() >= ways or missing:
            raise InputError(f"support labels must cover every class 0..{ways - 1} (missing {missing})")
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
        return self.adapter.session.run(["query_pred"], feeds)[0]
