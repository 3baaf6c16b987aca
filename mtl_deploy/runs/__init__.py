"""Training runs: the run directory (records, ownership, finishing), the resumable training
state, and the torchrun process group."""

from mtl_deploy.runs.directory import RunDirectory
from mtl_deploy.runs.distributed import Group, from_environment
from mtl_deploy.runs.state import TrainingState, read_state, write_state

__all__ = ["Group", "RunDirectory", "TrainingState", "from_environment", "read_state", "write_state"]
