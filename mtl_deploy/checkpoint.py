"""Checkpoints: a directory with `weights.safetensors` and `manifest.json`.

The manifest describes the architecture in JSON, so `load` rebuilds the module from the
registry and fills it from safetensors: nothing is ever unpickled. A content hash of the
weights detects a corrupt or tampered file before it is used. An optional
`inputs.safetensors` keeps a few real input rows that export verification runs on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from mtl_deploy.atomic import INTEGRITY, atomic_directory, sha256_file
from mtl_deploy.errors import InputError, MtlDeployError, bounded
from mtl_deploy.models.inputs import signature_of
from mtl_deploy.models.module_trunk import check_rebuildable
from mtl_deploy.models.registry import build_model
from mtl_deploy.trust import trusting
from mtl_deploy.version import __version__

FORMAT = "mtl_deploy.checkpoint"
FORMAT_VERSION = 1
WEIGHTS, INPUTS, MANIFEST = "weights.safetensors", "inputs.safetensors", "manifest.json"


@dataclass
class Checkpoint:
    model: nn.Module
    manifest: dict
    sample_inputs: object | None  # real input rows, in the model's input layout, when the checkpoint has them


def save(model: nn.Module, path: str | Path, *, sample_inputs=None,
         inputs: tuple[str | Path, ...] = (), **info) -> Path:
    """Write `model` as a checkpoint directory at `path` (replacing a previous checkpoint
    only once the new one is complete, never anything else, nor any of `inputs`).
    `info` (JSON-serialisable) goes into the manifest."""
    if not hasattr(model, "config"):
        raise InputError(f"{type(model).__name__} has no config(); save a model built by mtl_deploy")
    check_rebuildable(model)
    if sample_inputs is not None:
        try:
            signature_of(model).coerce(sample_inputs)
        except InputError as err:
            raise InputError(f"sample_inputs do not fit the model: {err}") from None
    with atomic_directory(path, "checkpoint", inputs) as staging:
        write_checkpoint(model, staging, sample_inputs=sample_inputs, **info)
    return Path(path)


def write_checkpoint(model: nn.Module, directory: Path, *, sample_inputs=None, **info) -> None:
    """The checkpoint files of `model` in the existing `directory` (not atomic: `save` is)."""
    config = model.config()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}  # the same file from any device
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise MtlDeployError(f"the model's weights hold NaN or inf ({bounded(broken, 3)}): training or adaptation "
                             "diverged; lower the learning rate. Nothing was written")
    save_file(state, directory / WEIGHTS)
    files = {WEIGHTS: sha256_file(directory / WEIGHTS)}
    if sample_inputs is not None:
        signature = signature_of(model)
        rows = signature.coerce(sample_inputs)
        save_file({name: t.contiguous() for name, t in zip(signature.names, rows)}, directory / INPUTS)
        files[INPUTS] = sha256_file(directory / INPUTS)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "library_version": __version__, "torch_version": torch.__version__,
        "architecture": config, "tasks": config["tasks"], "input_shape": config["input_shape"],
        "inputs": [spec.to_dict() for spec in signature_of(model).specs],
        "normalization": _normalization(model),
        "parameters": sum(p.numel() for p in model.parameters()),
        "content_hash": files[WEIGHTS], "files": files, "integrity": INTEGRITY, "info": info,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _normalization(model: nn.Module) -> dict | None:
    normalize = getattr(model, "normalize", None)
    if normalize is None:
        return None
    return {"mean": normalize.mean.flatten().tolist(), "std": normalize.std.flatten().tolist()}


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise InputError(f"checkpoint {str(path)!r} does not exist; check the path")
    if not (path / MANIFEST).is_file():
        raise InputError(f"{path} is not a checkpoint: it has no {MANIFEST}")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MtlDeployError(f"{path / MANIFEST} is corrupt ({err}); restore it or retrain") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"{path} is not an mtl_deploy checkpoint (manifest format {manifest.get('format')!r})"
                         if isinstance(manifest, dict) else f"{path / MANIFEST} is not a checkpoint manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise MtlDeployError(f"{path} was written by a newer mtl-deploy ({manifest.get('library_version')}); upgrade")
    return manifest


def _load_tensors(path: Path, name: str, expected_hash: str | None) -> dict[str, torch.Tensor]:
    file = path / name
    if not file.is_file():
        raise MtlDeployError(f"checkpoint {path} is incomplete: {name} is missing")
    if expected_hash is not None and sha256_file(file) != expected_hash:
        raise MtlDeployError(f"{file} is corrupt: its hash does not match the manifest; restore it or retrain")
    try:
        return load_file(file)
    except (SafetensorError, OSError) as err:
        raise MtlDeployError(f"{file} is corrupt ({err}); restore it or retrain") from None


def _build(path: Path, architecture, device: str = "cpu") -> nn.Module:
    try:
        with torch.device(device):
            return build_model(architecture)
    except MtlDeployError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise MtlDeployError(f"{path / MANIFEST} describes an architecture this version cannot build "
                             f"({type(err).__name__}: {str(err)[:120]}); restore it or retrain") from None


def _user_trunk(architecture) -> bool:
    """Whether the architecture's trunk is a user's network (built by its own code)."""
    trunk = architecture.get("trunk") if isinstance(architecture, dict) else None
    return isinstance(trunk, dict) and trunk.get("type") in ("module", "transformers")


def _check_shapes(path: Path, skeleton: nn.Module) -> None:
    """Compare the model's tensor shapes with those in the weights file's header before
    the weights are read in: a tampered width is refused at no cost."""
    try:
        with safe_open(path / WEIGHTS, "pt") as weights:
            stored = {key: list(weights.get_slice(key).get_shape()) for key in weights.keys()}
    except (SafetensorError, OSError) as err:
        raise MtlDeployError(f"{path / WEIGHTS} is corrupt ({str(err)[:120]}); restore it or retrain") from None
    wanted = {key: list(value.shape) for key, value in skeleton.state_dict().items()}
    # keys of an older layout (per-task heads) are read in by the model's load hook: compare
    # the tensors both sides name, and the total size, which a tampered width blows up
    wrong = [f"{key} {wanted[key]} vs {stored[key]}" for key in sorted(wanted.keys() & stored.keys())
             if wanted[key] != stored[key]]
    total = lambda shapes: sum(math.prod(shape) for shape in shapes.values())  # noqa: E731
    if total(wanted) > total(stored):
        wrong.append(f"{total(wanted)} parameters vs {total(stored)}")
    if wrong:
        raise MtlDeployError(f"{path / WEIGHTS} does not fit the manifest's architecture (manifest vs weights: "
                             f"{bounded(wrong, 3)}); restore the checkpoint or retrain")


def read(path: str | Path, trust: Iterable[str] = ()) -> Checkpoint:
    """The checkpoint at `path`: rebuilt model (eval mode), manifest and sample inputs. A
    user trunk's factory is imported only from a package in `trust` (see `mtl_deploy.trust`)."""
    path = Path(path)
    manifest = read_manifest(path)
    files = manifest.get("files", {}) if isinstance(manifest.get("files"), dict) else {}
    state = _load_tensors(path, WEIGHTS, files.get(WEIGHTS))
    architecture = manifest.get("architecture")
    with trusting(trust):
        # a built-in model's shapes come from a skeleton on the meta device, at no cost; a
        # user's network is built by its own code, which need not work on meta tensors
        model = _build(path, architecture) if _user_trunk(architecture) else None
        _check_shapes(path, model if model is not None else _build(path, architecture, device="meta"))
        model = model if model is not None else _build(path, architecture)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise MtlDeployError(f"{path / WEIGHTS} does not fit the manifest's architecture ({first})") from None
    sample_inputs = _sample_inputs(path, model, files[INPUTS]) if INPUTS in files else None
    return Checkpoint(model.eval(), manifest, sample_inputs)


def _sample_inputs(path: Path, model: nn.Module, expected_hash: str):
    """The stored real rows, in the model's input layout."""
    tensors = _load_tensors(path, INPUTS, expected_hash)
    signature = signature_of(model)
    missing = [n for n in signature.names if n not in tensors]
    if missing:
        raise MtlDeployError(f"{path / INPUTS} has no rows for input(s) {missing}; restore it or retrain")
    return signature.pack([tensors[n] for n in signature.names])


def load(path: str | Path, trust: Iterable[str] = ()) -> nn.Module:
    """The model saved at `path`, in eval mode; `trust` names the top-level packages whose
    trunk factory it may import (a checkpoint of a wrapped network needs its own)."""
    return read(path, trust).model
