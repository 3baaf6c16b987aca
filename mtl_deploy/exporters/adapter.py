"""`export(..., format="adapter")`: the on-device adaptation graph of a meta-learned model,
proved to match `mtl_deploy.adapt` followed by a forward on the query set, in ONNX Runtime
and the ONNX reference evaluator, for several ways, shots and query sizes.

Beside the one graph (`adapter.onnx`) lie its two halves: `adapt.onnx` (support set -> the
adapted state) and `predict.onnx` (query rows and state -> predictions). The runtime adapts
once with the first, keeps the state (a task file holds it) and predicts with the second;
the proof covers both ways, which compute the same operations.

The proof's episodes are drawn from real input rows when the checkpoint has them (or the
caller gives them), random rows on the training scale otherwise: ten SGD steps on noise
can run away, and then float32 rounding grows into differences that say nothing about
the graph."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxruntime
import torch

from mtl_deploy.atomic import INTEGRITY, atomic_directory, sha256_file
from mtl_deploy.errors import InputError, MtlDeployError
from mtl_deploy.exporters.adapter_graph import METRIC, AdaptHalf, AdapterGraph, PredictHalf
from mtl_deploy.exporters.onnx_graph import trace_onnx
from mtl_deploy.exporters.report import ExportReport
from mtl_deploy.exporters.source import ExportSource, export_source, weights_hash
from mtl_deploy.exporters.runtimes import DEFAULT_RUNTIMES, graph_runners, runtime_versions
from mtl_deploy.exporters.verify import ParityError, ParityReport, check_graph, random_inputs
from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.meta.adapt import adapt, fewshot_model
from mtl_deploy.models.fewshot import FewShotModel
from mtl_deploy.version import __version__

INPUTS = ("support_x", "support_y", "query_x")
OUTPUT = "query_pred"
FROM_STATE = "query_pred from the state"  # the parity report's name for adapt.onnx then predict.onnx
HALVES = {"adapt": "adapt.onnx", "predict": "predict.onnx"}
ADAPTER_ATOL = 1e-4  # unrolled SGD steps accumulate float32 rounding; the contract is 1e-4


def _rows(model, real: torch.Tensor | None, count: int, seed: int) -> torch.Tensor:
    """`count` rows drawn from the real rows when known, else random on the training scale."""
    if real is None:
        return random_inputs(model, count, seed)["x"]
    return real[torch.randint(len(real), (count,), generator=torch.Generator().manual_seed(seed))]


def _episode(model, ways: int, shots: int, queries: int, seed: int, real: torch.Tensor | None = None):
    """Support/query rows; labels as ids and as the graph's support_y matrix (one-hot for classes)."""
    support_x = _rows(model, real, ways * shots, seed)
    query_x = _rows(model, real, queries, seed + 1)
    if model.task.kind == "regression":
        labels = torch.randn(ways * shots, model.task.out_dim, generator=torch.Generator().manual_seed(seed))
        return support_x, labels, labels, query_x
    labels = torch.arange(ways).repeat_interleave(shots)
    return support_x, labels, torch.nn.functional.one_hot(labels, ways).float(), query_x


def _cases(model) -> list[tuple[int, int, int]]:
    """(ways, shots, queries) to prove parity on; ways vary only where the graph allows."""
    if model.task.kind == "regression":
        return [(1, 5, 1), (1, 10, 7), (1, 20, 33)]
    ways = model.task.out_dim
    if model.adaptation["algorithm"] in METRIC:
        return [(2, 1, 1), (ways, 1, 7), (ways, 5, 15), (ways + 3, 3, 10)]
    return [(ways, 1, 1), (ways, 5, 15), (ways, 3, 8)]


@dataclass
class AdapterPlan:
    """What every format of the adaptation graph is made from: the graph module, an example
    episode to trace it on, and the manifest fields its formats share."""

    source: ExportSource
    model: FewShotModel
    graph: AdapterGraph
    steps: int
    lr: float
    head_lr: float | None
    real: torch.Tensor | None  # the checkpoint's input rows, for the proof's episodes

    @property
    def metric(self) -> bool:
        return self.model.adaptation["algorithm"] in METRIC

    @property
    def example(self) -> tuple[torch.Tensor, ...]:
        """support_x, labels, support_y, query_x of a small episode to trace on."""
        return _episode(self.model, max(2, self.model.task.out_dim if not self.metric else 3), 2, 3, seed=0)

    def dims(self, max_rows: int | None = None) -> dict[str, torch.export.Dim]:
        """The graph's dynamic axes: support and query rows, and ways for a metric head
        (each at most `max_rows` when given)."""
        bound = {} if max_rows is None else {"max": max_rows}
        names = ("support", "query", "ways") if self.metric else ("support", "query")
        return {name: torch.export.Dim(name, **bound) for name in names}

    def input_shapes(self, dims: dict) -> tuple[dict, ...]:
        """Per graph input (support_x, support_y, query_x), its dynamic axes."""
        support_y = {0: dims["support"], 1: dims["ways"]} if self.metric else {0: dims["support"]}
        return {0: dims["support"]}, support_y, {0: dims["query"]}

    def prove(self, runners: dict, atol: float, rtol: float) -> ParityReport:
        return prove_adapter(runners, self.model, self.steps, self.lr if self.head_lr is None else None, self.real,
                             atol, rtol)

    def manifest(self, path: Path, report: ParityReport) -> dict:
        """The manifest of an adaptation graph at `path`, proved by `report`."""
        model, metric = self.model, self.metric
        regression = model.task.kind == "regression"
        return {
            "format": "mtl_deploy.adapter", "library_version": __version__, "artifact": path.name,
            "algorithm": model.adaptation["algorithm"], "steps": self.steps, "lr": self.lr, "head_lr": self.head_lr,
            "inputs": [{"name": "support_x", "shape": ["support", *model.input_shape], "dtype": "float32"},
                       {"name": "support_y", "dtype": "float32",
                        "shape": ["support", "ways" if metric else model.task.out_dim],
                        "encoding": "values" if regression else "one-hot"},
                       {"name": "query_x", "shape": ["query", *model.input_shape], "dtype": "float32"}],
            "outputs": [{"name": OUTPUT, "shape": ["query", "ways" if metric else model.task.out_dim],
                         "dtype": "float32", "values": "values" if regression else "logits"}],
            "task": model.task.to_dict(), "model_sha256": sha256_file(path), "weights_sha256": weights_hash(model),
            "integrity": INTEGRITY, "torch_version": torch.__version__, "parity": report.to_dict(),
        }


def plan_adapter(source: ExportSource, steps: int | None = None, lr: float | None = None) -> AdapterPlan:
    """The adaptation graph of a few-shot model: its own steps and rates unless `steps` or
    `lr` (then every layer's) are given."""
    model = fewshot_model(source.model).eval()
    real = torch.from_numpy(source.input_sets["real"]["x"]) if "real" in source.input_sets else None
    steps = model.adaptation["adapt_steps"] if steps is None else steps
    head_lr = model.adaptation.get("head_lr") if lr is None else None  # a given lr is every layer's
    lr = model.adaptation["inner_lr"] if lr is None else lr
    if steps < 0:
        raise InputError(f"steps must be >= 0, got {steps}")
    return AdapterPlan(source, model, AdapterGraph(model, steps, lr, head_lr).eval(), steps, lr, head_lr, real)


def export_adapter(model_or_path, out_dir: str | Path, *, steps: int | None = None, lr: float | None = None,
                   opset: int = 20, atol: float = ADAPTER_ATOL, rtol: float = 1e-4,
                   sample_inputs: torch.Tensor | str | Path | None = None,
                   runtimes=DEFAULT_RUNTIMES) -> ExportReport:
    """Write `adapter.onnx`, its halves and `manifest.json` to `out_dir` once parity is
    proved in `runtimes`."""
    plan = plan_adapter(export_source(model_or_path, sample_inputs), steps, lr)
    graph, dims, example = plan.graph, plan.dims(), plan.example
    support_shapes = plan.input_shapes(dims)
    with torch.no_grad():
        state = graph.adapt(example[0], example[2])
    names, axes = graph.state_names(), graph.state_axes()
    state_axes = tuple({axis: dims[name] for axis, name in varying.items()} for varying in axes)
    protos = {
        "adapter": trace_onnx(graph, (example[0], example[2], example[3]), list(INPUTS), [OUTPUT], opset,
                              dynamic_shapes=support_shapes),
        "adapt": trace_onnx(AdaptHalf(graph), (example[0], example[2]), list(INPUTS[:2]), names, opset,
                            dynamic_shapes=support_shapes[:2]),
        "predict": trace_onnx(PredictHalf(graph), (example[3], *state), [INPUTS[2], *names], [OUTPUT], opset,
                              dynamic_shapes=(support_shapes[2], state_axes)),
    }
    for proto in protos.values():
        proto.producer_name, proto.producer_version = "mtl_deploy", __version__
    with atomic_directory(out_dir, "export", plan.source.paths) as staging:
        files = {"adapter": "adapter.onnx", **HALVES}
        for half, proto in protos.items():
            onnx.save_model(proto, staging / files[half], save_as_external_data=False)
        path = staging / files["adapter"]
        arrays = [{"name": name, "dtype": "float32", "shape": [ax.get(i, size) for i, size in enumerate(value.shape)]}
                  for name, value, ax in zip(names, state, axes)]
        halves = {**HALVES, "arrays": arrays, **{f"{half}_sha256": sha256_file(staging / file)
                                                 for half, file in HALVES.items()}}
        report = plan.prove(adapter_runners(staging, path.name, halves, runtimes=runtimes), atol, rtol)
        if not report.passed:
            raise ParityError(report.failure_message() + "; no export was written")
        manifest = {**plan.manifest(path, report), "opset": opset, "state": halves, "onnx_version": onnx.__version__,
                    "onnxruntime_version": onnxruntime.__version__, "runtime_versions": runtime_versions(runtimes)}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportReport(Path(out_dir), manifest, report)


def adapter_runners(directory: Path, artifact: str, halves: dict | None, device: str = "cpu",
                    runtimes=DEFAULT_RUNTIMES) -> dict:
    """Runtime name -> function(episode feeds) -> {query_pred: the one graph's, FROM_STATE:
    adapt.onnx's state fed to predict.onnx}, each graph checked first (`halves`: the
    manifest's "state"; None for an export made before the halves, which has the one graph)."""
    state = [a["name"] for a in halves["arrays"]] if halves else []
    graphs = {"adapter": artifact, **({half: halves[half] for half in HALVES} if halves else {})}
    expected = {"adapter": (list(INPUTS), [OUTPUT]), "adapt": (list(INPUTS[:2]), state),
                "predict": ([INPUTS[2], *state], [OUTPUT])}
    runners = {}
    for half, file in graphs.items():
        proto = check_graph(directory / file, unbatched=state)
        io = ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output])
        if io != expected[half]:
            raise MtlDeployError(f"{file} has inputs/outputs {io}, the manifest says {expected[half]}; export again")
        runners[half] = graph_runners(directory / file, proto, device, runtimes)

    def runner(runtime: str):
        def run(feeds: dict) -> dict:
            outputs = {OUTPUT: runners["adapter"][runtime](feeds)[OUTPUT]}
            if halves:
                adapted = runners["adapt"][runtime]({name: feeds[name] for name in INPUTS[:2]})
                outputs[FROM_STATE] = runners["predict"][runtime]({INPUTS[2]: feeds[INPUTS[2]], **adapted})[OUTPUT]
            return outputs
        return run
    return {runtime: runner(runtime) for runtime in runners["adapter"]}


def prove_adapter(runners: dict, model: FewShotModel, steps: int, lr: float, real: torch.Tensor | None,
                  atol: float, rtol: float) -> ParityReport:
    """Run the adapter graph in every runner on episodes of several ways, shots and query
    sizes, against `mtl_deploy.adapt` + forward in PyTorch."""
    metric = model.adaptation["algorithm"] in METRIC
    report = ParityReport(atol, rtol, [], ["random" if real is None else "real"], sorted(runners))
    for seed, (ways, shots, queries) in enumerate(_cases(model), start=1):
        support_x, labels, support_y, query_x = _episode(model, ways, shots, queries, seed, real)
        adapted = adapt(_with_ways(model, ways) if metric else model, support_x, labels, steps=steps, lr=lr)
        with torch.no_grad():
            want = adapted(query_x)[model.task.name].numpy()
        feeds = {"support_x": support_x.numpy(), "support_y": support_y.numpy(), "query_x": query_x.numpy()}
        for runtime, run in runners.items():
            for name, values in run(feeds).items():
                report.record(runtime, name, values, want, f"{runtime}, {ways}-way {shots}-shot, {queries} queries")
            report.comparisons += 1
        report.batch_sizes.append(queries)
    return report


def _with_ways(model: FewShotModel, ways: int) -> FewShotModel:
    """The same metric model as a `ways`-way one (a metric head has no weights to resize)."""
    return model.reheaded(task=TaskSpec(model.task.name, "multiclass", ways)).eval()
