"""Trunks, heads and multi-task containers."""

from mtl_deploy.models.multitask import MultiTaskModel, Normalize
from mtl_deploy.models.registry import ARCHITECTURES, build_model
from mtl_deploy.models.trunks import ConvTrunk, MLPTrunk, build_trunk

__all__ = ["ARCHITECTURES", "ConvTrunk", "MLPTrunk", "MultiTaskModel", "Normalize", "build_model", "build_trunk"]
