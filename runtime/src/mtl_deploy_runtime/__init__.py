"""Serving exports with ONNX Runtime and numpy alone (no torch import)."""

from mtl_deploy.runtime.adapter import AdaptedTask, FewShotAdapter
from mtl_deploy.runtime.files import predict_file, read_rows, write_predictions
from mtl_deploy.runtime.predictor import Predictor
from mtl_deploy.runtime.session import DEVICES, ProviderError

__all__ = ["DEVICES", "AdaptedTask", "FewShotAdapter", "Predictor", "ProviderError", "predict_file", "read_rows",
           "write_predictions"]
