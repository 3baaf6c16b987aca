"""`mtl_deploy.adapt`: a meta-learned model plus a support set in, a plain model with the
adapted weights (or the support embeddings) baked in out, which saves and exports like any
other model. The model's manifest says which algorithm adapts it and with what steps/lr."""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtl_deploy import checkpoint
from mtl_deploy.config import MetaConfig
from mtl_deploy.atomic import check_output
from mtl_deploy.errors import InputError, MtlDeployError, bounded, numeric_array

MAX_STEPS = 100_000
from mtl_deploy.meta.evaluate import EvalRow, evaluate_fewshot
from mtl_deploy.meta.gradient_based import task_losses
from mtl_deploy.meta.learners import METRIC, make_learner
from mtl_deploy.models.fewshot import FewShotModel
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
    support_x = torch.as_tensor(numeric_array(_detached(support_x), "support_x"), dtype=torch.float32)
    support_y = torch.as_tensor(numeric_array(_detached(support_y), "support_y"))
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_STEPS):
        raise InputError(f"steps must be an integer in [0, {MAX_STEPS}], got {steps!r}")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf):
        raise InputError(f"lr must be a finite number > 0, got {lr!r}")
    adaptation = model.adaptation
    learner = make_learner(MetaConfig(algorithm=adaptation["algorithm"], inner_lr=adaptation["inner_lr"],
                                      adapt_steps=adaptation["adapt_steps"], head_lr=adaptation.get("head_lr"),
                                      proto_init=adaptation.get("proto_init", False)))
    adapted = learner.adapt(model, support_x, support_y, steps, lr)
    if not all(torch.isfinite(t).all() for t in adapted.state_dict().values() if t.is_floating_point()):
        raise MtlDeployError(f"adaptation diverged: the adapted weights hold NaN or inf (lr {lr or adaptation['inner_lr']}, "
                             f"steps {adaptation['adapt_steps'] if steps is None else steps}); lower the learning rate")
    return adapted


def _detached(values):
    return values.detach().cpu() if torch.is_tensor(values) else values


def _read_array(path: Path, keys: tuple[str, ...]) -> list[np.ndarray]:
    """Arrays `keys` of an .npz, or the one array of an .npy; never unpickled."""
    if not path.is_file():
        raise InputError(f"support file {str(path)!r} does not exist; give an .npz with arrays x and y")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            if path.suffix == ".npy":
                return [loaded]
            raise InputError(f"{path} holds one array, not an .npz archive of arrays {list(keys)}")
        with loaded as archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise InputError(f"{path}: no array(s) {missing}; the archive has {bounded(archive.files)}")
            return [archive[k] for k in keys]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"{path} is not a readable .npz or .npy file ({str(err)[:120]})") from None


def read_support(path: str | Path, labels: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The support set: arrays `x` (K, *input_shape) and `y` (K,) or (K, out) of an .npz, or
    `x` from an .npy with `y` from the .npy `labels`."""
    path = Path(path)
    if labels is None:
        if path.suffix == ".npy":
            raise InputError(f"{path} holds x only; give the labels too (--support-y y.npy), "
                             "or an .npz with arrays x and y")
        x, y = _read_array(path, ("x", "y"))
        return x, y
    (x,), (y,) = _read_array(path, ("x",)), _read_array(Path(labels), ("y",))
    return x, y


@dataclass
class Adapted:
    """What `adapt` printed: the adapted model and its support loss before and after."""

    model: FewShotModel
    loss_before: float
    loss_after: float


def support_loss(model: FewShotModel, x, y) -> float:
    """The mean loss on the support set (MSE for regression, cross-entropy for classes)."""
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    y = y.float().reshape(1, len(y), -1) if model.task.kind == "regression" else y.long().reshape(1, -1)
    with torch.no_grad():
        return float(task_losses(model, model.eval()(x)[model.task.name][None], y)[0])


def adapt_checkpoint(path: str | Path, support: str | Path, out_dir: str | Path, *, steps: int | None = None,
                     lr: float | None = None, support_y: str | Path | None = None) -> Adapted:
    """Adapt the checkpoint at `path` on the support set in `support` (and `support_y`) and
    save the result at `out_dir`, which may not be or hold any of the inputs."""
    inputs = (path, support, support_y)
    check_output(out_dir, "checkpoint", inputs)
    source = checkpoint.read(path)
    x, y = read_support(support, support_y)
    adapted = adapt(source.model, x, y, steps=steps, lr=lr)
    before = support_loss(source.model, x, y) if source.model.adaptation["algorithm"] not in METRIC else float("nan")
    checkpoint.save(adapted, out_dir, sample_inputs=torch.as_tensor(x, dtype=torch.float32), inputs=inputs,
                    adapted_from=source.manifest["content_hash"], support_examples=len(x),
                    steps=steps, lr=lr, meta=source.manifest["info"].get("meta"))
    return Adapted(adapted, before, support_loss(adapted, x, y))


def evaluate_checkpoint(path: str | Path, episodes: int = 600, steps: tuple[int, ...] = (0, 1, 10),
                        shots: int | None = None, baselines: bool = True, progress: bool = False) -> list[EvalRow]:
    """The evaluation table of a meta-trained checkpoint on its family's meta-test tasks,
    with the shots it was trained for or `shots`."""
    source = checkpoint.read(path)
    model = fewshot_model(source.model)
    if episodes < 1 or any(s < 0 for s in steps) or (shots is not None and shots < 1):
        raise InputError("--episodes and --shots must be >= 1 and every --steps value >= 0")
    meta = MetaConfig(**source.manifest["info"]["meta"])
    if shots is not None:
        meta.shots = shots
    return evaluate_fewshot(model, family_of(meta), meta, episodes, steps, baselines=baselines, progress=progress)
