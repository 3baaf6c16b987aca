"""Architecture name -> model class, so a checkpoint rebuilds its module from JSON alone."""

from __future__ import annotations

from torch import nn

from mtl_deploy.errors import MtlDeployError
from mtl_deploy.models.fewshot import FewShotModel
from mtl_deploy.models.sharing import SCHEMES
from mtl_deploy.models.wrapped import WrappedModel

# Every sharing scheme, the few-shot model, and a user's network wrapped.
ARCHITECTURES: dict[str, type[nn.Module]] = {cls.architecture: cls for cls in [*SCHEMES.values(), FewShotModel, WrappedModel]}


def build_model(config: dict) -> nn.Module:
    """The untrained module described by `config` (as written by `model.config()`)."""
    name = config.get("architecture")
    if name not in ARCHITECTURES:
        raise MtlDeployError(f"unknown architecture {name!r}; this version knows {sorted(ARCHITECTURES)} — "
                             "upgrade mtl-deploy or re-save the model")
    return ARCHITECTURES[name].from_config(config)
