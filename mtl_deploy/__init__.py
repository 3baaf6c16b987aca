"""mtl_deploy: train multi-task and meta-learned PyTorch models, adapt them fast, and
export them to ONNX with proved parity."""

import pkgutil
import sys
from importlib import import_module

import mtl_deploy_runtime
from mtl_deploy_runtime import __version__

# The torch-free modules ship as their own distribution, mtl-deploy-runtime, and keep their
# names here as the very same module objects, never copies: mtl_deploy.runtime.X is
# mtl_deploy_runtime.X, and mtl_deploy.errors / .atomic / .version are its errors, atomic
# and version, so `except mtl_deploy.errors.InputError` catches what the runtime raises.
_SHARED = ("atomic", "errors", "version")
sys.modules[f"{__name__}.runtime"] = runtime = mtl_deploy_runtime
for _info in pkgutil.iter_modules(mtl_deploy_runtime.__path__):
    _module = sys.modules[f"{__name__}.runtime.{_info.name}"] = import_module(f"mtl_deploy_runtime.{_info.name}")
    if _info.name in _SHARED:
        sys.modules[f"{__name__}.{_info.name}"] = globals()[_info.name] = _module
del _info, _module

# Resolved on first use, so that `import mtl_deploy` (and with it mtl_deploy.runtime) needs
# no torch, and no export extra.
_PUBLIC = {"train": "mtl_deploy.training", "save": "mtl_deploy.checkpoint", "load": "mtl_deploy.checkpoint",
           "adapt": "mtl_deploy.meta.adapt", "export": "mtl_deploy.exporters",
           "wrap": "mtl_deploy.models.wrapped", "fewshot": "mtl_deploy.models.fewshot",
           "meta_finetune": "mtl_deploy.meta.train", "TaskSpec": "mtl_deploy.data.tasks"}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'mtl_deploy' has no attribute {name!r}")
