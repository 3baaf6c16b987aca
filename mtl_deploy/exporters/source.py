"""What every export of a model starts from: the model (from memory or a checkpoint), the
real input rows its parity is proved on, and the manifest fields all formats share."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from mtl_deploy import checkpoint
from mtl_deploy.data.loaders import load_inputs
from mtl_deploy.errors import InputError, MtlDeployError, bounded
from mtl_deploy.exporters.onnx_graph import BATCH_DIM, INPUT_NAME
from mtl_deploy.exporters.verify import random_inputs
from mtl_deploy.version import __version__

EXPORT_FORMAT = "mtl_deploy.export"


def weights_hash(model: nn.Module) -> str:
    """sha256 of the model's state as safetensors bytes: equal to a checkpoint's content hash."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return hashlib.sha256(safetensors_bytes(state)).hexdigest()


@dataclass
class ExportSource:
    model: nn.Module
    input_sets: dict[str, np.ndarray]  # "random" rows on the training scale, "real" rows when known
    checkpoint_manifest: dict | None
    paths: tuple[Path, ...] = ()  # the files it was read from: an export may not overwrite them

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.model.tasks]

    def base_manifest(self) -> dict:
        """Fields every export manifest carries, whatever its artifact format."""
        model, source = self.model, self.checkpoint_manifest
        return {
            "format": EXPORT_FORMAT, "library_version": __version__, "torch_version": torch.__version__,
            "weights_sha256": weights_hash(model), "batch_axis": BATCH_DIM,
            "tasks": {t.name: {"output": t.name, "kind": t.kind, "out_dim": t.out_dim,
                               "values": "values" if t.kind == "regression" else "logits"} for t in model.tasks},
            "architecture": model.config(), "parameters": sum(p.numel() for p in model.parameters()),
            "checkpoint": source and {"content_hash": source["content_hash"], "info": source.get("info", {})},
        }

    def io_manifest(self) -> dict:
        """Inputs and outputs of a graph that takes `x` and returns one tensor per task."""
        return {"inputs": [{"name": INPUT_NAME, "dtype": "float32", "shape": [BATCH_DIM, *self.model.input_shape]}],
                "outputs": [{"name": t.name, "dtype": "float32", "shape": [BATCH_DIM, t.out_dim]}
                            for t in self.model.tasks]}


def export_source(model_or_path, sample_inputs: torch.Tensor | str | Path | None = None) -> ExportSource:
    paths = tuple(Path(p) for p in (model_or_path, sample_inputs) if isinstance(p, (str, Path)))
    if isinstance(model_or_path, nn.Module):
        model, stored, manifest = model_or_path.eval(), None, None
    else:
        loaded = checkpoint.read(model_or_path)
        model, stored, manifest = loaded.model, loaded.sample_inputs, loaded.manifest
    if not hasattr(model, "tasks") or not hasattr(model, "config"):
        raise InputError(f"{type(model).__name__} is not an mtl_deploy model; build it with mtl_deploy.models")
    broken = [name for name, value in model.state_dict().items()
              if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise MtlDeployError(f"the model's weights hold NaN or inf ({bounded(broken, 3)}); "
                             "nothing to export: retrain or adapt with a lower learning rate")
    if isinstance(sample_inputs, (str, Path)):
        sample_inputs = load_inputs(sample_inputs, model.input_shape, [t.name for t in model.tasks])
    real = sample_inputs if sample_inputs is not None else stored
    if real is not None and not torch.isfinite(torch.as_tensor(real).float()).all():
        raise InputError("sample inputs contain NaN or inf; clean them first")
    if real is not None and tuple(real.shape[1:]) != tuple(model.input_shape):
        raise InputError(f"sample inputs have row shape {tuple(real.shape[1:])}, the model takes {model.input_shape}")
    input_sets = {"random": random_inputs(model, 64, seed=1).numpy()}
    if real is not None:
        input_sets["real"] = real.float().numpy()
    return ExportSource(model, input_sets, manifest, paths)
