"""Proof that an exported graph computes what the PyTorch model computes.

Every export goes through `check_graph` (full ONNX checker, standard operators, symbolic
batch axis) and `prove_parity`: the graph runs in ONNX Runtime and in
`onnx.reference.ReferenceEvaluator` (and OpenVINO and tract when asked: `runtimes.py`) on
random and real inputs at several batch sizes, and each output is compared with the
expected values under |a - e| <= atol + rtol * |e|.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from mtl_deploy.errors import InputError, MtlDeployError
from mtl_deploy.exporters.onnx_graph import STANDARD_DOMAINS
from mtl_deploy.models.inputs import signature_of

DEFAULT_BATCH_SIZES = (1, 37, 256)
DEFAULT_ATOL, DEFAULT_RTOL = 1e-5, 1e-4
MAX_TOLERANCE = 1.0  # past this a "proof" proves nothing
MAX_BATCH = 65536
Outputs = dict[str, np.ndarray]


def proof_tolerances(atol: float | None, rtol: float | None, default_atol: float = DEFAULT_ATOL) -> tuple[float, float]:
    """The tolerances of a parity proof: the library's defaults, or the caller's when they
    are finite numbers in [0, 1]; anything else is a usage error, not a failed proof."""
    atol = default_atol if atol is None else atol
    rtol = DEFAULT_RTOL if rtol is None else rtol
    for name, value in (("atol", atol), ("rtol", rtol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value <= MAX_TOLERANCE):
            raise InputError(f"{name} must be a number in [0, {MAX_TOLERANCE:g}], got {value!r}")
    return float(atol), float(rtol)


def proof_batch_sizes(batch_sizes) -> list[int]:
    """Batch sizes of a parity proof: a non-empty list of integers in [1, 65536]."""
    sizes = list(batch_sizes)
    if not sizes or any(isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 1 <= b <= MAX_BATCH
                        for b in sizes):
        shown = sizes[:8]
        raise InputError(f"batch_sizes must be a non-empty list of integers in [1, {MAX_BATCH}], got {shown}"
                         + (" ..." if len(sizes) > 8 else ""))
    return [int(b) for b in sizes]


class ParityError(MtlDeployError):
    """The exported graph does not match the model within the tolerances."""


@dataclass
class OutputParity:
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0  # |a - e| / max(|e|, atol): relative where |e| is not tiny
    passed: bool = True
    worst_case: str = ""  # runtime, inputs and batch size of the largest violation
    non_finite: str = ""  # where NaN or inf appeared, e.g. "NaN in PyTorch's output"


@dataclass
class ParityReport:
    atol: float
    rtol: float
    batch_sizes: list[int]
    inputs: list[str]
    runtimes: list[str]
    outputs: dict[str, OutputParity] = field(default_factory=dict)

    comparisons: int = 0  # (runtime, input set, batch) runs compared; a proof of none proves nothing
    against: str = "PyTorch"  # what the runtimes' outputs were compared with
    runtime_max_abs_error: dict[str, float] = field(default_factory=dict)  # runtime -> over every output

    def record(self, runtime: str, name: str, actual: np.ndarray, expected: np.ndarray, where: str) -> None:
        """One output of one run of `runtime` against its expected values."""
        error = record_error(self.outputs.setdefault(name, OutputParity()), actual, expected, self.atol, self.rtol,
                             where)
        self.runtime_max_abs_error[runtime] = max(self.runtime_max_abs_error.get(runtime, 0.0), error)

    @property
    def passed(self) -> bool:
        return self.comparisons > 0 and bool(self.outputs) and all(o.passed for o in self.outputs.values())

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def absorb(self, other: "ParityReport", label: str) -> None:
        """Add another graph's proof (int8 beside float32): its outputs as "NAME (label)"."""
        self.outputs.update({f"{name} ({label} vs {other.against})": parity for name, parity in other.outputs.items()})
        self.comparisons += other.comparisons
        self.runtimes = sorted({*self.runtimes, *other.runtimes})
        self.runtime_max_abs_error.update({f"{runtime} ({label} vs {other.against})": error
                                           for runtime, error in other.runtime_max_abs_error.items()})

    def failure_message(self) -> str:
        if not self.comparisons or not self.outputs:
            return "parity was not proved: no comparison ran"
        name, worst = max(((n, o) for n, o in self.outputs.items() if not o.passed),
                          key=lambda item: item[1].max_abs_error)
        if worst.non_finite:
            return f"parity failed: output {name!r} has {worst.non_finite} in {worst.worst_case}"
        return (f"parity failed: output {name!r} differs by up to {worst.max_abs_error:.3g} "
                f"(atol {self.atol:g}, rtol {self.rtol:g}) in {worst.worst_case}")


def check_graph(proto_or_path: onnx.ModelProto | str | Path, unbatched: Collection[str] = ()) -> onnx.ModelProto:
    """Full ONNX check, standard domains only, a symbolic first (batch) axis on every input
    and output but the `unbatched` ones (an adapted task's state: one task's arrays)."""
    proto = onnx.load(str(proto_or_path)) if isinstance(proto_or_path, (str, Path)) else proto_or_path
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise MtlDeployError(f"the ONNX checker rejects the graph: {str(err).strip().splitlines()[0]}") from None
    domains = {op.domain for op in proto.opset_import} | {node.domain for node in proto.graph.node}
    foreign = sorted(domains - set(STANDARD_DOMAINS))
    if foreign or proto.functions:
        raise MtlDeployError(f"the graph needs non-standard domains or functions {foreign}; it must use ai.onnx only")
    for value in [*proto.graph.input, *proto.graph.output]:
        if value.name in unbatched:
            continue
        first = value.type.tensor_type.shape.dim[0]
        if not first.dim_param:
            raise MtlDeployError(f"{value.name!r} has a fixed first axis ({first.dim_value}); the batch must be dynamic")
    return proto


def random_inputs(model: nn.Module, rows: int, seed: int = 0, sizes: dict[str, int] | None = None
                  ) -> dict[str, torch.Tensor]:
    """Input name -> `rows` random rows: floats on the scale the model was trained on
    (mean + std * N(0, 1) per feature), integers drawn from each input's range, every
    symbolic axis at `sizes` (see `Signature.random`)."""
    normalize = getattr(model, "normalize", None)
    scale = None if normalize is None else (normalize.mean, normalize.std)
    return signature_of(model).random(rows, seed, sizes, scale)


def random_feeds(model: nn.Module, rows: int, seed: int = 0, sizes: dict[str, int] | None = None
                 ) -> dict[str, np.ndarray]:
    """`random_inputs` as numpy arrays, as a graph takes them."""
    return {name: value.numpy() for name, value in random_inputs(model, rows, seed, sizes).items()}


def torch_outputs(model: nn.Module, task_names: list[str]) -> Callable[[dict], Outputs]:
    """feeds in, numpy out: the PyTorch side of a parity check."""
    signature = signature_of(model)

    def run(feeds: dict) -> Outputs:
        with torch.no_grad():
            outputs = model(signature.pack([torch.from_numpy(feeds[name]) for name in signature.names]))
        return {name: outputs[name].numpy() for name in task_names}
    return run


def same_feeds(rows: dict[str, np.ndarray]) -> dict:
    """A graph whose inputs are exactly the model's."""
    return dict(rows)


def _tile_rows(rows: np.ndarray, batch: int) -> np.ndarray:
    repeats = -(-batch // len(rows))
    return np.ascontiguousarray(np.concatenate([rows] * repeats)[:batch])


def prove_parity(runners: dict[str, Callable[[dict], Outputs]], expected_fn: Callable[[dict], Outputs],
                 input_sets: dict[str, dict[str, np.ndarray]], batch_sizes=DEFAULT_BATCH_SIZES,
                 atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL,
                 make_feeds: Callable[[dict], dict] = same_feeds, against: str = "PyTorch") -> ParityReport:
    """Run every runner on every input set (input name -> rows) at every batch size and
    compare with `expected_fn` (`against` names it); `make_feeds` turns a batch of rows
    into the graph's inputs."""
    if not runners or not input_sets:
        raise InputError("a parity proof needs at least one runtime and one input set")
    report = ParityReport(atol, rtol, proof_batch_sizes(batch_sizes), sorted(input_sets), sorted(runners),
                          against=against)
    for kind, rows in input_sets.items():
        for batch in batch_sizes:
            feeds = make_feeds({name: _tile_rows(values, batch) for name, values in rows.items()})
            expected = expected_fn(feeds)
            for runtime, run in runners.items():
                actual = run(feeds)
                for name, want in expected.items():
                    report.record(runtime, name, actual[name], want, f"{runtime}, {kind} inputs, batch {batch}")
                report.comparisons += 1
    return report


def record_error(parity: OutputParity, actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float,
                 where: str) -> float:
    """Fold one comparison into `parity`; return its max abs error (inf for NaN or a wrong shape)."""
    bad = [f"{'NaN' if np.isnan(values).any() else 'inf'} in {side}" for side, values
           in (("PyTorch's output (the model itself computes it: check its weights and inputs)", expected),
               ("the artifact's output", actual)) if not np.isfinite(values).all()]
    if bad:
        parity.passed, parity.max_abs_error = False, float("inf")
        parity.non_finite, parity.worst_case = bad[0], where
        return float("inf")
    if actual.shape != expected.shape:
        parity.passed, parity.max_abs_error = False, float("inf")
        parity.worst_case = f"{where} (shape {actual.shape} vs {expected.shape})"
        return float("inf")
    error = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    max_abs = float(error.max(initial=0.0))
    rel = float((error / np.maximum(np.abs(expected), atol if atol > 0 else 1e-12)).max(initial=0.0))
    ok = bool(np.all(error <= atol + rtol * np.abs(expected))) and bool(np.isfinite(actual).all())
    if max_abs >= parity.max_abs_error:
        parity.worst_case = where
    parity.max_abs_error = max(parity.max_abs_error, max_abs)
    parity.max_rel_error = max(parity.max_rel_error, rel)
    parity.passed = parity.passed and ok
    return max_abs
