"""Trunks, heads, multi-task containers and their sharing schemes."""

from mtl_deploy.models.cross_stitch import CrossStitchModel
from mtl_deploy.models.fewshot import FewShotModel
from mtl_deploy.models.hierarchical import HierarchicalModel
from mtl_deploy.models.mmoe import MMoEModel
from mtl_deploy.models.multitask import MultiTaskBase, MultiTaskModel, Normalize
from mtl_deploy.models.registry import ARCHITECTURES, build_model
from mtl_deploy.models.sharing import SCHEMES, build_multitask
from mtl_deploy.models.soft import SoftSharingModel
from mtl_deploy.models.trunks import ConvTrunk, MLPTrunk, build_trunk

__all__ = ["ARCHITECTURES", "SCHEMES", "ConvTrunk", "CrossStitchModel", "FewShotModel", "HierarchicalModel", "MLPTrunk", "MMoEModel",
           "MultiTaskBase", "MultiTaskModel", "Normalize", "SoftSharingModel", "build_model", "build_multitask",
           "build_trunk"]
