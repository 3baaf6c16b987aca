"""Resumable training state: the modules' weights, the optimiser's state, the loop's
counters and tensors, and the random number generators, in one safetensors file (tensors,
plus the JSON-able rest in its metadata: no pickle). The file is written under a
temporary name and renamed over the previous one, so a run killed at any moment leaves
the last complete state readable."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file
from torch import nn

from mtl_deploy.errors import InputError, MtlDeployError

STATE_FORMAT = "mtl_deploy.training_state"


@dataclass
class TrainingState:
    """What a loop needs to continue exactly: `info` (JSON-able counters and history) and
    `tensors` (name -> tensor) of its own, beside the modules and the optimiser."""

    info: dict
    tensors: dict[str, torch.Tensor]
    modules: dict[str, dict[str, torch.Tensor]]
    optimizer: dict
    rng: torch.Tensor
    best: dict[str, torch.Tensor] | None  # the best weights so far (a state dict), if any
    cuda_rng: torch.Tensor | None = None  # the GPU's generator (dropout on a GPU draws from it), if one was used

    def restore(self, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer) -> None:
        """Load the saved weights into `modules` (in place, so the optimiser keeps its
        parameters), the optimiser's state (onto its parameters' device), and the global
        random number generators (the GPU's when both runs have one)."""
        if set(modules) != set(self.modules):
            raise MtlDeployError(f"the saved state holds {sorted(self.modules)}, this run {sorted(modules)}; "
                                 "resume with the run's own config")
        for name, module in modules.items():
            load_module(module, self.modules[name])
        optimizer.load_state_dict(self.optimizer)  # moves each saved tensor to its parameter's device
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(self.cuda_rng)


def load_module(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """`load_state_dict`, also for buffers whose size grows during training (the loss
    history of a weighting): such buffers are resized to the saved shape first, where they are."""
    buffers = dict(module.named_buffers())
    for name, tensor in state.items():
        if name in buffers and buffers[name].shape != tensor.shape:
            owner, _, attr = name.rpartition(".")
            setattr(module.get_submodule(owner) if owner else module, attr,
                    torch.empty_like(tensor, device=buffers[name].device))
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise MtlDeployError(f"the saved state does not fit this model ({str(err).splitlines()[0]}); "
                             "resume with the run's own config") from None


def write_state(path: str | Path, *, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer,
                info: dict, tensors: dict[str, torch.Tensor] | None = None,
                best: dict[str, torch.Tensor] | None = None) -> None:
    """Write the state to `path` atomically (temporary name, fsync, rename), every tensor
    copied to the CPU: a state saved on a GPU resumes on any device."""
    flat: dict[str, torch.Tensor] = {"rng": torch.get_rng_state()}
    if torch.cuda.is_initialized():
        flat["cuda_rng"] = torch.cuda.get_rng_state()
    for name, module in modules.items():
        flat.update({f"module/{name}/{key}": value for key, value in module.state_dict().items()})
    optimizer_state = optimizer.state_dict()
    scalars: dict[str, dict] = {}
    for index, entry in optimizer_state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                flat[f"optimizer/{index}/{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    flat.update({f"loop/{key}": value for key, value in (tensors or {}).items()})
    flat.update({f"best/{key}": value for key, value in (best or {}).items()})
    metadata = {"format": STATE_FORMAT, "info": info, "modules": list(modules),
                "optimizer": {"param_groups": optimizer_state["param_groups"], "scalars": scalars}}
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({k: v.detach().cpu().clone().contiguous() for k, v in flat.items()}, temporary,
              metadata={"state": json.dumps(metadata)})
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def read_state(path: str | Path) -> TrainingState:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no training state at {path}; nothing to resume")
    try:
        data = path.read_bytes()  # one read: a snapshot, even while a run replaces the file
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
        metadata = json.loads(header["__metadata__"]["state"])
        flat = load(data)
    except (SafetensorError, OSError, KeyError, TypeError, ValueError, RuntimeError) as err:
        raise MtlDeployError(f"training state {path} is corrupt ({err}); resume from an earlier copy or restart") from None
    if metadata.get("format") != STATE_FORMAT:
        raise MtlDeployError(f"{path} is not an mtl_deploy training state")
    modules = {name: {} for name in metadata["modules"]}
    optimizer_state: dict[int, dict] = {int(k): dict(v) for k, v in metadata["optimizer"]["scalars"].items()}
    tensors, best = {}, {}
    for key, value in flat.items():
        kind, _, rest = key.partition("/")
        if kind == "module":
            name, _, param = rest.partition("/")
            modules[name][param] = value
        elif kind == "optimizer":
            index, _, field = rest.partition("/")
            optimizer_state.setdefault(int(index), {})[field] = value
        elif kind == "loop":
            tensors[rest] = value
        elif kind == "best":
            best[rest] = value
    optimizer = {"state": optimizer_state, "param_groups": metadata["optimizer"]["param_groups"]}
    return TrainingState(metadata["info"], tensors, modules, optimizer, flat["rng"], best or None,
                         flat.get("cuda_rng"))
