"""Sharing schemes by name: `model.sharing = {"scheme": NAME, ...options}` in the run
config picks the class; every option is that class's constructor keyword argument."""

from __future__ import annotations

from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.errors import InputError
from mtl_deploy.models.cross_stitch import CrossStitchModel
from mtl_deploy.models.hierarchical import HierarchicalModel
from mtl_deploy.models.mmoe import MMoEModel
from mtl_deploy.models.multitask import MultiTaskBase, MultiTaskModel
from mtl_deploy.models.soft import SoftSharingModel

SCHEMES: dict[str, type[MultiTaskBase]] = {
    "hard": MultiTaskModel, "soft": SoftSharingModel, "hierarchical": HierarchicalModel,
    "cross_stitch": CrossStitchModel, "mmoe": MMoEModel,
}


def build_multitask(input_shape: tuple[int, ...], tasks: list[TaskSpec], trunk: dict | None,
                    sharing: dict | None = None) -> MultiTaskBase:
    """The untrained model of scheme `sharing["scheme"]` (default "hard")."""
    options = dict(sharing or {})
    scheme = options.pop("scheme", "hard")
    if scheme not in SCHEMES:
        raise InputError(f"unknown sharing scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    try:
        return SCHEMES[scheme](input_shape, tasks, trunk, **options)
    except TypeError as err:
        raise InputError(f"sharing scheme {scheme!r}: bad option in model.sharing ({err})") from None
