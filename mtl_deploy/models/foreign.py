"""A module we did not build, exported as it is: `export(module, out, example_inputs=...,
output_names=...)` takes any network whose forward returns a tensor, a tuple or a dict of
tensors (an encoder's hidden states, a production model's own heads), and proves its ONNX
or torch.export artifact like any other.

`ForeignModel` gives such a module the face the exporters read: a signature, named outputs
(`tasks`, each of kind `values`), and a config that names its class. It is never saved as a
checkpoint: the user's code is what rebuilds it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mtl_deploy.errors import InputError
from mtl_deploy.models.inputs import example_signature
from mtl_deploy.models.module_trunk import call_module, run_on_examples


@dataclass(frozen=True)
class OutputSpec:
    """One named output of a foreign module: its row shape as the examples showed it."""

    name: str
    shape: tuple
    kind: str = "values"

    @property
    def out_dim(self) -> int:
        return int(self.shape[-1]) if self.shape else 1

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape)}


def _as_dict(output, names: list[str] | None) -> dict[str, torch.Tensor]:
    """The module's output as name -> tensor, in its own order."""
    if isinstance(output, torch.Tensor):
        values = {"output": output}
    elif isinstance(output, dict):
        values = dict(output)
    elif isinstance(output, (tuple, list)):
        values = {f"output{i}": v for i, v in enumerate(output)}
    else:
        raise InputError(f"the module returned {type(output).__name__}; export takes a tensor, a tuple or a dict "
                         "of tensors")
    if names is not None:
        if len(names) != len(values):
            raise InputError(f"output_names has {len(names)} names, the module returns {len(values)} outputs")
        values = dict(zip(names, values.values()))
    bad = [k for k, v in values.items() if not isinstance(v, torch.Tensor) or v.dim() == 0]
    if bad:
        raise InputError(f"output(s) {bad} are not batched tensors; every output needs a batch axis")
    return values


class ForeignModel(nn.Module):
    """`module` with named outputs and the signature its examples showed."""

    architecture = "foreign"

    def __init__(self, module: nn.Module, example_inputs, output_names: list[str] | None = None, axes=None):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise InputError(f"export takes a torch.nn.Module, got {type(module).__name__}")
        self.module, self.signature = module, example_signature(example_inputs, axes)
        self.output_names = None if output_names is None else [str(n) for n in output_names]
        outputs = run_on_examples(self, example_inputs, type(module).__name__)
        self.tasks = [OutputSpec(name, tuple(value.shape[1:])) for name, value in outputs.items()]

    @property
    def input_shape(self) -> tuple:
        return tuple(self.signature.specs[0].shape[1:])

    def forward(self, inputs) -> dict[str, torch.Tensor]:
        return _as_dict(call_module(self.module, inputs, self.signature.layout), self.output_names)

    def config(self) -> dict:
        return {"architecture": self.architecture, "class": f"{type(self.module).__module__}."
                f"{type(self.module).__qualname__}", "outputs": [t.to_dict() for t in self.tasks]}
