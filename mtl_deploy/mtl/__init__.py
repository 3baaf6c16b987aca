"""Joint multi-task training, loss weighting, gradient aggregation, task relations,
distillation and metrics."""

from mtl_deploy.mtl.aggregate import METHODS, aggregate, aggregation_weights
from mtl_deploy.mtl.distill import Distilled, distill, train_teachers
from mtl_deploy.mtl.fit import Fitted, fit, train
from mtl_deploy.mtl.jacobian import shared_parameters, task_jacobian
from mtl_deploy.mtl.joint import TrainResult, evaluate
from mtl_deploy.mtl.metrics import PRIMARY, delta_m, delta_m_of_metrics, is_better, macro_f1, task_metrics
from mtl_deploy.mtl.relations import TaskRelations, analyze, task_relations
from mtl_deploy.mtl.weighting import WEIGHTINGS, EqualWeighting, LossWeighting, make_weighting

__all__ = ["METHODS", "PRIMARY", "WEIGHTINGS", "Distilled", "EqualWeighting", "Fitted", "LossWeighting",
           "TaskRelations", "TrainResult", "aggregate", "aggregation_weights", "analyze", "delta_m",
           "delta_m_of_metrics", "distill", "evaluate", "fit", "is_better", "macro_f1",
           "make_weighting", "shared_parameters", "task_jacobian", "task_metrics", "task_relations", "train", "train_teachers"]
