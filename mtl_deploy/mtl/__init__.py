"""Joint multi-task training, loss weighting and metrics."""

from mtl_deploy.mtl.fit import Fitted, fit, fit_dataset, train
from mtl_deploy.mtl.metrics import PRIMARY, is_better, macro_f1, task_metrics
from mtl_deploy.mtl.joint import TrainResult, evaluate, train_multitask
from mtl_deploy.mtl.weighting import WEIGHTINGS, EqualWeighting, LossWeighting, make_weighting

__all__ = ["PRIMARY", "WEIGHTINGS", "EqualWeighting", "Fitted", "LossWeighting", "TrainResult", "evaluate", "fit",
           "fit_dataset", "is_better", "macro_f1", "make_weighting", "task_metrics", "train", "train_multitask"]
