"""`mtl_deploy.adapt`: a meta-learned model plus a support set in, a plain model with the
adapted weights (or the support embeddings) baked in out, which saves and exports like any
other model. The model's manifest says which algorithm adapts it and with what steps/lr."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtl_deploy import checkpoint
from mtl_deploy.config import MetaConfig
from mtl_deploy.errors import InputError
from mtl_deploy.meta.evaluate import EvalRow, evaluate_fewshot
from mtl_deploy.meta.learners import make_learner
from mtl_deploy.meta.model import FewShotModel
from mtl_deploy.meta.train import family_of


def fewshot_model(model_or_path) -> FewShotModel:
    model = model_or_path if isinstance(model_or_path, nn.Module) else checkpoint.load(model_or_path)
    if not isinstance(model, FewShotModel) or not model.adaptation:
        raise InputError("this model was not meta-learned; adapt needs a checkpoint from a meta-learning preset "
                         "(e.g. mtl-deploy train --preset sinusoid-maml)")
    return model


def adapt(model_or_path, support_x, support_y, *, steps: int | None = None, lr: float | None = None,
          task: str | None = None) -> FewShotModel:
    """Adapt to the task the support set shows. `steps`/`lr` default to the values the
    model was meta-trained for (Meta-SGD models use their learned rates)."""
    model = fewshot_model(model_or_path)
    if task is not None and task != model.task.name:
        raise InputError(f"unknown task {task!r}; this model predicts {model.task.name!r}")
    support_x = torch.as_tensor(support_x, dtype=torch.float32)
    support_y = torch.as_tensor(support_y)
    adaptation = model.adaptation
    learner = make_learner(MetaConfig(algorithm=adaptation["algorithm"], inner_lr=adaptation["inner_lr"],
                                      adapt_steps=adaptation["adapt_steps"], head_lr=adaptation.get("head_lr"),
                                      proto_init=adaptation.get("proto_init", False)))
    return learner.adapt(model, support_x, support_y, steps, lr)


def read_support(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Arrays `x` (K, *input_shape) and `y` (K,) or (K, out) from an .npz, never unpickled."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"support file {str(path)!r} does not exist; give an .npz with arrays x and y")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("x", "y") if k not in archive.files]
            if missing:
                raise InputError(f"{path}: no array(s) {missing}; the archive has {archive.files}")
            return archive["x"], archive["y"]
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"{path} is not a readable .npz archive ({err})") from None


def adapt_checkpoint(path: str | Path, support: str | Path, out_dir: str | Path, *, steps: int | None = None,
                     lr: float | None = None) -> FewShotModel:
    """Adapt the checkpoint at `path` on the support set in `support` and save the result."""
    source = checkpoint.read(path)
    x, y = read_support(support)
    adapted = adapt(source.model, x, y, steps=steps, lr=lr)
    checkpoint.save(adapted, out_dir, sample_inputs=torch.as_tensor(x, dtype=torch.float32),
                    adapted_from=source.manifest["content_hash"], support_examples=len(x),
                    steps=steps, lr=lr, meta=source.manifest["info"].get("meta"))
    return adapted


def evaluate_checkpoint(path: str | Path, episodes: int = 600, steps: tuple[int, ...] = (0, 1, 10),
                        shots: int | None = None, baselines: bool = True) -> list[EvalRow]:
    """The evaluation table of a meta-trained checkpoint on its family's meta-test tasks,
    with the shots it was trained for or `shots`."""
    source = checkpoint.read(path)
    model = fewshot_model(source.model)
    if episodes < 1 or any(s < 0 for s in steps) or (shots is not None and shots < 1):
        raise InputError("--episodes and --shots must be >= 1 and every --steps value >= 0")
    meta = MetaConfig(**source.manifest["info"]["meta"])
    if shots is not None:
        meta.shots = shots
    return evaluate_fewshot(model, family_of(meta), meta, episodes, steps, baselines=baselines)
