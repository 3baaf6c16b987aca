"""mtl_deploy: train multi-task and meta-learned PyTorch models, adapt them fast, and
export them to ONNX with proved parity."""

from mtl_deploy.checkpoint import load, save
from mtl_deploy.meta.adapt import adapt
from mtl_deploy.version import __version__

__all__ = ["__version__", "adapt", "export", "load", "save"]


def __getattr__(name: str):
    # `export` needs the [export] extra (onnx, onnxruntime); importing it lazily keeps
    # `import mtl_deploy` working on an install without it.
    if name == "export":
        from mtl_deploy.export import export

        return export
    raise AttributeError(f"module 'mtl_deploy' has no attribute {name!r}")
