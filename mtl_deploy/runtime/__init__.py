"""Serving exports with ONNX Runtime and numpy alone (no torch import)."""

from mtl_deploy.runtime.adapter import AdaptedTask, FewShotAdapter
from mtl_deploy.runtime.files import predict_file, read_rows, write_predictions
from mtl_deploy.runtime.predictor import Predictor

__all__ = ["AdaptedTask", "FewShotAdapter", "Predictor", "predict_file", "read_rows", "write_predictions"]
