"""What a model takes as input: one or more named tensors, each with a dtype and a shape
whose first axis is the batch and whose other axes are fixed sizes or named symbolic axes
(`sequence`, ...).

A built-in model takes one float tensor `x`. A wrapped network takes what its
`example_inputs` showed: a tensor, a tuple of tensors, or a dict of named tensors. The
signature packs graph inputs (positional, named) back into that structure, draws random
inputs on each input's scale for parity proofs, and checks what a caller passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mtl_deploy.errors import InputError

BATCH = "batch"
SEQUENCE = "sequence"
LAYOUTS = ("tensor", "tuple", "dict")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "int64": torch.int64, "int32": torch.int32, "bool": torch.bool}
MASK_NAME = "attention_mask"  # a 0/1 padding mask beside token ids (mean pooling reads it)
PROOF_LENGTHS = (5, 17)  # sizes of each symbolic axis a parity proof tries
MIN_EXAMPLE_SIZE = 2  # a dynamic axis traced at size 1 would be fixed to 1 by the exporter


@dataclass(frozen=True)
class InputSpec:
    """One named input: dtype name, shape (`batch` first, then fixed sizes or axis names),
    and for integer inputs the range [low, high) random proofs draw from."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    low: int = 0
    high: int = 2

    @property
    def integer(self) -> bool:
        return not (DTYPES[self.dtype].is_floating_point or self.dtype == "bool")

    def to_dict(self) -> dict:
        entry = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        return {**entry, "range": [self.low, self.high]} if self.integer else entry

    @classmethod
    def from_dict(cls, entry: dict) -> "InputSpec":
        low, high = entry.get("range", [0, 2])
        return cls(entry["name"], entry["dtype"], tuple(entry["shape"]), int(low), int(high))


@dataclass(frozen=True)
class Signature:
    """The inputs of a model and how its forward takes them (`layout`)."""

    specs: tuple[InputSpec, ...]
    layout: str = "tensor"

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def symbolic_axes(self) -> list[str]:
        """The named axes besides the batch, in order of first appearance."""
        axes: list[str] = []
        for spec in self.specs:
            axes += [d for d in spec.shape[1:] if isinstance(d, str) and d not in axes]
        return axes

    def to_dict(self) -> dict:
        return {"layout": self.layout, "inputs": [s.to_dict() for s in self.specs]}

    @classmethod
    def from_dict(cls, entry: dict) -> "Signature":
        return cls(tuple(InputSpec.from_dict(s) for s in entry["inputs"]), entry.get("layout", "tensor"))

    def pack(self, tensors: Sequence[torch.Tensor]):
        """Positional tensors (graph input order) -> what the model's forward takes."""
        if self.layout == "tensor":
            return tensors[0]
        if self.layout == "tuple":
            return tuple(tensors)
        return dict(zip(self.names, tensors))

    def unpack(self, inputs) -> list[torch.Tensor]:
        """What a caller passed -> the tensors in graph input order, each checked."""
        if isinstance(inputs, dict):
            missing = [n for n in self.names if n not in inputs]
            extra = sorted(set(inputs) - set(self.names))
            if missing or extra:
                raise InputError(f"inputs must be named {self.names}; "
                                 + (f"missing {missing}" if missing else f"unexpected {extra}"))
            tensors = [inputs[n] for n in self.names]
        elif isinstance(inputs, (tuple, list)):
            tensors = list(inputs)
        else:
            tensors = [inputs]
        if len(tensors) != len(self.specs):
            raise InputError(f"the model takes {len(self.specs)} input(s) {self.names}, got {len(tensors)}")
        for spec, tensor in zip(self.specs, tensors):
            check_tensor(spec, tensor)
        _check_axes(self, tensors)
        return tensors

    def coerce(self, inputs) -> list[torch.Tensor]:
        """Like `unpack`, after turning arrays into tensors and floats into each input's
        float dtype (rows read from files are often float64)."""
        def one(value, spec: InputSpec):
            tensor = torch.as_tensor(value) if not isinstance(value, torch.Tensor) else value
            if tensor.is_floating_point() and not spec.integer and spec.dtype != "bool":
                tensor = tensor.to(DTYPES[spec.dtype])
            return tensor.detach().cpu()
        if isinstance(inputs, dict):
            by_spec = {s.name: s for s in self.specs}
            inputs = {k: one(v, by_spec[k]) if k in by_spec else v for k, v in inputs.items()}
        elif isinstance(inputs, (tuple, list)):
            inputs = [one(v, s) for v, s in zip(inputs, self.specs)] + list(inputs[len(self.specs):])
        else:
            inputs = one(inputs, self.specs[0])
        return self.unpack(inputs)

    def random(self, rows: int, seed: int = 0, sizes: dict[str, int] | None = None,
               scale: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Random inputs of `rows` rows: integers drawn uniformly from each input's range,
        floats N(0, 1) (or mean + std * N(0, 1) with `scale`, for the one input `x`); each
        symbolic axis at `sizes[name]` (default: the first proof length)."""
        gen = torch.Generator().manual_seed(seed)
        sizes = {BATCH: rows, **{a: PROOF_LENGTHS[0] for a in self.symbolic_axes}, **(sizes or {})}
        out = {}
        for spec in self.specs:
            shape = [sizes[d] if isinstance(d, str) else d for d in spec.shape]
            shape[0] = rows
            if spec.name == MASK_NAME and spec.integer and len(shape) == 2:  # padding at the end, >= 1 token kept
                lengths = torch.randint(1, shape[1] + 1, (rows, 1), generator=gen)
                out[spec.name] = (torch.arange(shape[1]) < lengths).to(DTYPES[spec.dtype])
            elif spec.integer:
                out[spec.name] = torch.randint(spec.low, spec.high, shape, generator=gen, dtype=DTYPES[spec.dtype])
            elif spec.dtype == "bool":
                out[spec.name] = torch.rand(shape, generator=gen) < 0.5
            else:
                value = torch.randn(shape, generator=gen)
                if scale is not None:
                    value = scale[0] + scale[1] * value
                out[spec.name] = value.to(DTYPES[spec.dtype])
        return out


def check_tensor(spec: InputSpec, tensor) -> None:
    """One input against its spec: a tensor of the right dtype, rank and fixed sizes."""
    if not isinstance(tensor, torch.Tensor):
        raise InputError(f"input {spec.name!r} must be a tensor, got {type(tensor).__name__}")
    if tensor.dtype != DTYPES[spec.dtype]:
        raise InputError(f"input {spec.name!r} has dtype {str(tensor.dtype).removeprefix('torch.')}; "
                         f"the model takes {spec.dtype}")
    fixed = [d if isinstance(d, int) else None for d in spec.shape]
    if tensor.dim() != len(spec.shape) or any(f is not None and f != s for f, s in zip(fixed[1:], tensor.shape[1:])):
        raise InputError(f"input {spec.name!r} has shape {list(tensor.shape)} (row shape {list(tensor.shape[1:])}); "
                         f"the model takes {list(spec.shape)}")
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        raise InputError(f"input {spec.name!r} contains NaN or inf; clean it first")


def _check_axes(signature: Signature, tensors: Sequence[torch.Tensor]) -> None:
    """A named axis has one size across every input (the batch included)."""
    seen: dict[str, tuple[str, int]] = {}
    for spec, tensor in zip(signature.specs, tensors):
        for axis, size in zip(spec.shape, tensor.shape):
            if isinstance(axis, str):
                name, first = seen.setdefault(axis, (spec.name, int(size)))
                if first != size:
                    raise InputError(f"axis {axis!r} is {first} in input {name!r} but {size} in {spec.name!r}")


def signature_of(model: torch.nn.Module) -> Signature:
    """The model's inputs: its own signature, or the one float input `x` of a built-in model."""
    own = getattr(model, "signature", None)
    if isinstance(own, Signature):
        return own
    return Signature((InputSpec("x", "float32", (BATCH, *model.input_shape)),))


def example_signature(example_inputs, axes: dict[str, dict[int, str]] | None = None) -> Signature:
    """The signature `example_inputs` (tensor, tuple or dict of tensors) shows. Axis 0 is
    the batch; axis 1 of a 2-D integer input is `sequence` (token ids, masks); `axes`
    ({input name: {axis: name}}) names others, or fixes an axis with the name None."""
    if isinstance(example_inputs, torch.Tensor):
        layout, named = "tensor", [("x", example_inputs)]
    elif isinstance(example_inputs, (tuple, list)) and example_inputs:
        layout, named = "tuple", [(f"x{i}", t) for i, t in enumerate(example_inputs)]
    elif isinstance(example_inputs, dict) and example_inputs:
        layout, named = "dict", list(example_inputs.items())
    else:
        raise InputError("example_inputs must be a tensor, a non-empty tuple of tensors or a non-empty dict of "
                         f"named tensors, got {type(example_inputs).__name__}")
    axes = dict(axes or {})
    unknown = sorted(set(axes) - {n for n, _ in named})
    if unknown:
        raise InputError(f"axes names inputs {unknown} that example_inputs does not have")
    specs = []
    for name, tensor in named:
        if not isinstance(name, str) or not name.isidentifier():
            raise InputError(f"input names must be identifiers, got {name!r}")
        if not isinstance(tensor, torch.Tensor):
            raise InputError(f"example input {name!r} must be a tensor, got {type(tensor).__name__}")
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in DTYPES:
            raise InputError(f"example input {name!r} has dtype {dtype}; use one of {', '.join(DTYPES)}")
        if tensor.dim() == 0 or len(tensor) < MIN_EXAMPLE_SIZE:
            raise InputError(f"example input {name!r} needs a batch axis of at least {MIN_EXAMPLE_SIZE} rows, "
                             f"got shape {list(tensor.shape)}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputError(f"example input {name!r} contains NaN or inf")
        integer = not (tensor.is_floating_point() or tensor.dtype == torch.bool)
        shape: list[int | str] = [BATCH, *tensor.shape[1:]]
        if integer and tensor.dim() == 2:
            shape[1] = SEQUENCE
        for axis, axis_name in axes.get(name, {}).items():
            if not 1 <= axis < tensor.dim():
                raise InputError(f"axes[{name!r}] names axis {axis}; input {name!r} has axes 1 to {tensor.dim() - 1}")
            shape[axis] = tensor.shape[axis] if axis_name is None else axis_name
        for axis, dim in enumerate(shape[1:], 1):
            if isinstance(dim, str) and tensor.shape[axis] < MIN_EXAMPLE_SIZE:
                raise InputError(f"example input {name!r} has size {tensor.shape[axis]} on axis {dim!r}; "
                                 f"give at least {MIN_EXAMPLE_SIZE} so it stays dynamic")
        low, high = (int(tensor.min()), int(tensor.max()) + 1) if integer else (0, 2)
        if name == MASK_NAME and integer:
            low, high = 0, 2  # prove padded rows too, whatever the examples held
        specs.append(InputSpec(name, dtype, tuple(shape), low, max(high, low + 1)))
    return Signature(tuple(specs), layout)
