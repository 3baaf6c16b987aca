"""mtl_deploy: train multi-task and meta-learned PyTorch models, adapt them fast, and
export them to ONNX with proved parity."""

from mtl_deploy.checkpoint import load, save
from mtl_deploy.export import export
from mtl_deploy.meta.adapt import adapt
from mtl_deploy.version import __version__

__all__ = ["__version__", "adapt", "export", "load", "save"]
