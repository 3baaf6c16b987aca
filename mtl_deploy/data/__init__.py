"""Task specifications, multi-task datasets, the built-in synthetic family and loaders."""

from mtl_deploy.data.dataset import MultiTaskDataset, normalization_stats
from mtl_deploy.data.loaders import load_csv, load_npz
from mtl_deploy.data.synthetic import DEFAULT_TASKS, synthetic_family
from mtl_deploy.data.tasks import TASK_KINDS, TaskSpec

__all__ = ["DEFAULT_TASKS", "MultiTaskDataset", "TASK_KINDS", "TaskSpec", "load_csv", "load_npz",
           "normalization_stats", "synthetic_family"]
