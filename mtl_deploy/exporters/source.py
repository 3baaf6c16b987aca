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
from mtl_deploy.exporters.onnx_graph import BATCH_DIM
from mtl_deploy.exporters.verify import random_feeds
from mtl_deploy.models.inputs import PROOF_LENGTHS, Signature, signature_of
from mtl_deploy.version import __version__

EXPORT_FORMAT = "mtl_deploy.export"


def weights_hash(model: nn.Module) -> str:
    """sha256 of the model's state as safetensors bytes: equal to a checkpoint's content hash."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return hashlib.sha256(safetensors_bytes(state)).hexdigest()


@dataclass
class ExportSource:
    model: nn.Module
    input_sets: dict[str, dict[str, np.ndarray]]  # set name -> input name -> rows: random, and real when known
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
                               "values": "values" if t.kind in ("regression", "values") else "logits"}
                      for t in model.tasks},
            "architecture": model.config(), "parameters": sum(p.numel() for p in model.parameters()),
            "checkpoint": source and {"content_hash": source["content_hash"], "info": source.get("info", {})},
        }

    @property
    def signature(self) -> Signature:
        return signature_of(self.model)

    def io_manifest(self) -> dict:
        """Inputs and outputs of a graph that takes the model's inputs and returns one
        tensor per task."""
        return {"inputs": [spec.to_dict() for spec in self.signature.specs],
                "outputs": [{"name": t.name, "dtype": "float32", "shape": [BATCH_DIM, *getattr(t, "shape", [t.out_dim])]}
                            for t in self.model.tasks]}


def proof_input_sets(model: nn.Module, real: dict[str, np.ndarray] | None) -> dict[str, dict[str, np.ndarray]]:
    """What a parity proof runs on: 64 random rows (at each proof length of every symbolic
    axis: sequences of 5 and 17 tokens), and the real rows when known."""
    axes = signature_of(model).symbolic_axes
    if axes:
        sets = {f"random, {'/'.join(axes)} {n}": random_feeds(model, 64, seed=1, sizes=dict.fromkeys(axes, n))
                for n in PROOF_LENGTHS}
    else:
        sets = {"random": random_feeds(model, 64, seed=1)}
    return {**sets, **({"real": real} if real is not None else {})}


def sample_feeds(model: nn.Module, sample, task_names: list[str]) -> dict[str, np.ndarray] | None:
    """Real input rows as graph feeds, checked against the model's inputs: a tensor, a
    tuple or dict of tensors, or a file (.npz: `x`, or one array per input; .csv: the
    columns that are not tasks)."""
    if sample is None:
        return None
    signature = signature_of(model)
    if isinstance(sample, (str, Path)):
        if signature.names == ["x"] and signature.layout == "tensor":
            sample = load_inputs(sample, model.input_shape, task_names)
        else:
            sample = _npz_inputs(Path(sample), signature)
    try:
        tensors = signature.coerce(sample)
    except InputError as err:
        raise InputError(f"sample inputs do not fit the model: {err}") from None
    return {name: t.detach().cpu().numpy() for name, t in zip(signature.names, tensors)}


def _npz_inputs(path: Path, signature: Signature) -> dict[str, torch.Tensor]:
    """One array per input name from an `.npz` (never unpickled)."""
    if not path.is_file():
        raise InputError(f"sample inputs {str(path)!r} do not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as err:
        raise InputError(f"{path} is not a readable .npz archive ({str(err)[:120]})") from None
    missing = [n for n in signature.names if n not in arrays]
    if missing:
        raise InputError(f"{path}: no array(s) named {missing}; the model takes {signature.names}")
    return {spec.name: torch.from_numpy(np.ascontiguousarray(arrays[spec.name])) for spec in signature.specs}


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
    real = sample_feeds(model, sample_inputs if sample_inputs is not None else stored, [t.name for t in model.tasks])
    return ExportSource(model, proof_input_sets(model, real), manifest, paths)
