"""mtl-deploy-runtime: serving exports and adapting few-shot models with ONNX Runtime and
numpy alone (no torch import). The mtl-deploy package gives these modules their names there
too: `mtl_deploy.runtime` is this package, `mtl_deploy.errors` its `errors`."""

from mtl_deploy_runtime.adapter import AdaptedTask, FewShotAdapter
from mtl_deploy_runtime.files import predict_file, read_rows, write_predictions
from mtl_deploy_runtime.predictor import Predictor
from mtl_deploy_runtime.session import DEVICES, ProviderError
from mtl_deploy_runtime.version import __version__

__all__ = ["DEVICES", "AdaptedTask", "FewShotAdapter", "Predictor", "ProviderError", "__version__", "predict_file",
           "read_rows", "write_predictions"]
