"""mtl_deploy: train multi-task and meta-learned PyTorch models, adapt them fast, and
export them to ONNX with proved parity."""

from importlib import import_module

from mtl_deploy.version import __version__

# Resolved on first use, so that `mtl_deploy.runtime` imports without torch (production
# installs `mtl-deploy[runtime]` only) and `import mtl_deploy` without the export extra.
_PUBLIC = {"train": "mtl_deploy.training", "save": "mtl_deploy.checkpoint", "load": "mtl_deploy.checkpoint",
           "adapt": "mtl_deploy.meta.adapt", "export": "mtl_deploy.exporters",
           "wrap": "mtl_deploy.models.wrapped", "fewshot": "mtl_deploy.models.fewshot",
           "meta_finetune": "mtl_deploy.meta.train", "TaskSpec": "mtl_deploy.data.tasks"}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mtl_deploy' has no attribute {name!r}")
