"""The one-shot protocol of Lake et al. (2015): 20 runs of 20-way one-shot classification
within an alphabet, each with 20 training drawings (one per class) and 20 test drawings,
scored through the run's `class_labels.txt` exactly as the authors' `demo_classification.py`
does; beside the model, the authors' Modified Hausdorff Distance baseline and a pixel
nearest neighbour on the same runs.

Runs come from `all_runs.zip` or its unpacked folder, read in memory."""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch import nn

from mtl_deploy import checkpoint
from mtl_deploy.data.omniglot import DRAWING_PIXELS, read_image
from mtl_deploy.errors import InputError

LABELS = "class_labels.txt"
ADAPTER = "adapter (onnxruntime)"


@dataclass
class Run:
    """One run: PNG bytes of its training drawings (class order: sorted file names), of its
    test drawings (sorted), and each test drawing's class."""

    name: str
    training: list[bytes]
    test: list[bytes]
    answers: list[int]
    files: list[str] = field(default_factory=list)  # test file names, for error messages


def _parse_run(name: str, read, listing: set[str]) -> Run:
    """A run from `read(relative path) -> bytes`; `listing` holds its relative paths."""
    if LABELS not in listing:
        raise InputError(f"run {name} has no {LABELS}; each run folder needs the authors' {LABELS} pairing "
                         "test/ drawings with training/ drawings (use the unchanged all_runs.zip)")
    pairs = [line.split() for line in read(LABELS).decode().splitlines() if line.strip()]
    if not pairs or any(len(p) != 2 for p in pairs):
        raise InputError(f"run {name}: {LABELS} must hold lines 'test/itemNN.png training/classNN.png'")
    local = lambda p: str(PurePosixPath(*PurePosixPath(p).parts[-2:]))  # noqa: E731  runNN/test/x.png -> test/x.png
    answer_of = {local(test): local(train) for test, train in pairs}
    training = sorted(set(answer_of.values()))
    test = sorted(answer_of)
    missing = [f for f in training + test if f not in listing]
    if missing:
        raise InputError(f"run {name}: {LABELS} names {missing[0]}, which the run does not hold")
    return Run(name, [read(f) for f in training], [read(f) for f in test],
               [training.index(answer_of[f]) for f in test], [f"{name}/{f}" for f in test])


def read_runs(path: str | Path) -> list[Run]:
    """Every run (a folder holding training/ or test/) of `all_runs.zip` or its folder."""
    path = Path(path)
    if path.is_file():
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as err:
            raise InputError(f"{path} is not a readable zip ({err}); give the authors' all_runs.zip") from None
        with archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            files = {PurePosixPath(n) for n in names}
            return _runs(files, lambda p: archive.read(str(p)), path)
    if not path.is_dir():
        raise InputError(f"one-shot runs {str(path)!r} do not exist; give all_runs.zip or its unpacked folder")
    files = {PurePosixPath(p.relative_to(path).as_posix()) for p in path.rglob("*") if p.is_file()}
    return _runs(files, lambda p: (path / p).read_bytes(), path)


def _runs(files: set[PurePosixPath], read, label: Path) -> list[Run]:
    roots = sorted({f.parent.parent for f in files if f.parent.name in ("training", "test")})
    if not roots:
        raise InputError(f"{label} holds no one-shot runs (folders runNN/ with training/ and test/); "
                         "give the authors' all_runs.zip")
    runs = []
    for root in roots:
        listing = {str(f.relative_to(root)) for f in files if f.is_relative_to(root)}
        runs.append(_parse_run(root.name or str(root), lambda p, root=root: read(root / p), listing))
    return runs


def ink_points(png: bytes):
    """A k-d tree of the inked pixels' coordinates, centred on their mean (the authors'
    LoadImgAsPoints); the tree answers the nearest-point queries of the distance."""
    from scipy.spatial import cKDTree

    ink = read_image(png, DRAWING_PIXELS)[0] > 0.5  # 105 -> 105 keeps every pixel as drawn
    points = np.argwhere(ink).astype(np.float64)  # (n, 2) row, column
    return cKDTree(points - points.mean(0))


def modified_hausdorff(a, b) -> float:
    """Dubuisson and Jain (1994): the larger of the two mean nearest-point distances
    between point sets `a` and `b` (k-d trees from `ink_points`)."""
    return max(float(b.query(a.data)[0].mean()), float(a.query(b.data)[0].mean()))


def mhd_error(run: Run) -> float:
    """Percent error of the MHD nearest training drawing."""
    training = [ink_points(p) for p in run.training]
    guesses = []
    for png in run.test:
        test = ink_points(png)
        guesses.append(int(np.argmin([modified_hausdorff(test, c) for c in training])))
    return 100.0 * float(np.mean(np.array(guesses) != np.array(run.answers)))


def pixel_error(run: Run, size: int) -> float:
    """Percent error of the nearest training drawing in pixel space at size x size."""
    train = np.stack([read_image(p, size).ravel() for p in run.training])  # (20, size²)
    test = np.stack([read_image(p, size).ravel() for p in run.test])
    distances = ((test[:, None] - train[None]) ** 2).sum(-1)
    return 100.0 * float(np.mean(distances.argmin(1) != np.array(run.answers)))


def _images(pngs: list[bytes], names: list[str], size: int, source: int) -> torch.Tensor:
    """(n, 1, size, size) model inputs, refusing a drawing not of the size the model was made from."""
    from PIL import Image

    for png, name in zip(pngs, names):
        with Image.open(io.BytesIO(png)) as image:
            if image.size != (source, source):
                raise InputError(f"{name} is {image.size[0]}x{image.size[1]} pixels; the checkpoint was trained on "
                                 f"{source}x{source} Omniglot drawings resized to {size}x{size}; give the authors' runs")
    return torch.from_numpy(np.stack([read_image(p, size) for p in pngs]))


def _run_images(run: Run, size: int, source: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's 20 training drawings (class i is drawing i) and its 20 test drawings."""
    train_names = [f"{run.name}/training drawing {i + 1}" for i in range(len(run.training))]
    return _images(run.training, train_names, size, source), _images(run.test, run.files, size, source)


def model_logits(model, x: torch.Tensor, query: torch.Tensor) -> np.ndarray:
    """(20, 20) logits of a run's test drawings `query` from `model` adapted on its training
    drawings `x`, class i being drawing i (metric learners embed them; gradient-based ones
    take their adaptation steps)."""
    from mtl_deploy.meta.adapt import adapt

    adapted = adapt(model, x, torch.arange(len(x)))
    with torch.no_grad():
        return adapted(query)[adapted.task.name].numpy()


def adapter_logits(adapter, x: torch.Tensor, query: torch.Tensor) -> np.ndarray:
    """The same logits from an adapter export in ONNX Runtime (`FewShotAdapter`): adapted
    with `adapt.onnx` on the training drawings, predicted with `predict.onnx`."""
    return adapter.adapt(x.numpy(), np.arange(len(x))).predict(query.numpy())


def error_of(logits: np.ndarray, run: Run) -> float:
    """Percent of the run's test drawings whose highest logit is not their class."""
    return 100.0 * float(np.mean(logits.argmax(1) != np.array(run.answers)))


def runs_as_episodes(runs: list[Run], images: list[tuple[torch.Tensor, torch.Tensor]]):
    """The runs as one batch of episodes, from their decoded drawings (`_run_images`): each
    run's 20 training drawings the support set (class i is training drawing i), its 20 test
    drawings the queries."""
    from mtl_deploy.data.episodes import Episodes

    ways = len(runs[0].training)
    return Episodes(torch.stack([x for x, _ in images]), torch.arange(ways).repeat(len(runs), 1),
                    torch.stack([query for _, query in images]), torch.tensor([r.answers for r in runs]))


def learned_baseline_errors(model, runs: list[Run], images: list[tuple[torch.Tensor, torch.Tensor]], family, meta,
                            pretrain_iterations: int = 2000) -> dict[str, list[float]]:
    """Percent error per run of the two learned baselines of the MAML paper, on the same
    runs: the same network pretrained on the meta-training classes as one classifier, then
    its head fine-tuned on the run's 20 drawings, and the network trained from scratch on
    them (meta/evaluate.py's baselines)."""
    from mtl_deploy.meta.evaluate import SCRATCH_STEPS, evaluate_adapted, fresh_like, pretrained_baseline

    episodes = runs_as_episodes(runs, images)
    torch.manual_seed(meta.seed)
    pretrained = pretrained_baseline(family, model, meta, pretrain_iterations)
    rows = {"pretrained": evaluate_adapted("pretrained", pretrained, episodes, (meta.adapt_steps,), meta.inner_lr,
                                           True)[0],
            "scratch": evaluate_adapted("scratch", fresh_like(model).eval(), episodes, (SCRATCH_STEPS,), meta.inner_lr,
                                        False)[0]}
    return {name: [100.0 * (1.0 - float(a)) for a in row.per_task] for name, row in rows.items()}


@dataclass
class RunsResult:
    """Percent error per run for each method: the model's algorithm, "mhd", "pixels", with
    a family to pretrain on "pretrained" and "scratch", and with an adapter export
    "adapter (onnxruntime)" and its largest logit difference from PyTorch."""

    runs: list[str]
    errors: dict[str, list[float]]
    adapter_max_abs_diff: float | None = None

    def summary(self, method: str) -> tuple[float, float]:
        """Mean and 95% CI half-width over runs."""
        return _mean_ci(np.array(self.errors[method]))

    def paired(self, method: str, reference: str) -> tuple[float, float]:
        """Mean and 95% CI half-width over runs of reference's error minus method's: how
        many points of error `method` saves, run by run."""
        return _mean_ci(np.array(self.errors[reference]) - np.array(self.errors[method]))


def _mean_ci(values: np.ndarray) -> tuple[float, float]:
    spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), 1.96 * spread / math.sqrt(len(values))


def evaluate_omniglot_runs(model: nn.Module | str | Path, path: str | Path, baselines: bool = True, family=None,
                           meta=None, pretrain_iterations: int = 2000, adapter: str | Path | None = None
                           ) -> RunsResult:
    """The model's error on each of the runs at `path` (all_runs.zip or its folder), with
    the MHD and pixel nearest-neighbour baselines on the same runs; given the family it
    was meta-trained on and its meta config, also the pretrained and from-scratch
    baselines (`learned_baseline_errors`); given the directory of the model's adapter
    export, the same runs adapted and predicted in ONNX Runtime."""
    from mtl_deploy.meta.adapt import fewshot_model

    transform = {}
    if not isinstance(model, nn.Module):
        source = checkpoint.read(model)
        model, transform = source.model, source.manifest["info"].get("input_transform") or {}
    model = fewshot_model(model)
    shape = model.input_shape
    if len(shape) != 3 or shape[0] != 1 or shape[1] != shape[2]:
        raise InputError(f"this model takes inputs of shape {list(shape)}; the one-shot runs need a model of "
                         "square grayscale images (1, size, size), e.g. one from the omniglot presets")
    runs = read_runs(path)
    ways = {len(r.training) for r in runs}
    if ways != {model.task.out_dim}:
        raise InputError(f"the runs are {sorted(ways)}-way; this model is {model.task.out_dim}-way: "
                         f"meta-train it with meta.ways {sorted(ways)[0]}")
    size, source = shape[1], transform.get("source_pixels", DRAWING_PIXELS)
    algorithm = model.adaptation["algorithm"]
    images = [_run_images(run, size, source) for run in runs]  # decoded once, for every method that learns
    logits = [model_logits(model, x, query) for x, query in images]
    errors = {algorithm: [error_of(values, run) for values, run in zip(logits, runs)]}
    difference = None
    if adapter is not None:
        from mtl_deploy.exporters.source import weights_hash
        from mtl_deploy.runtime import FewShotAdapter

        exported = FewShotAdapter(adapter, device="cpu")
        if exported.manifest.get("weights_sha256") != weights_hash(model):
            raise InputError(f"the adapter export {adapter} was made from other weights than this model; export "
                             "the model's own adapter (mtl-deploy export CKPT --format adapter)")
        on_device = [adapter_logits(exported, x, query) for x, query in images]
        errors[ADAPTER] = [error_of(values, run) for values, run in zip(on_device, runs)]
        difference = max(float(np.abs(a - b).max()) for a, b in zip(on_device, logits))
    if baselines:
        errors["mhd"] = [mhd_error(run) for run in runs]
        errors["pixels"] = [pixel_error(run, size) for run in runs]
        if family is not None and meta is not None:
            errors |= learned_baseline_errors(model, runs, images, family, meta, pretrain_iterations)
    return RunsResult([r.name for r in runs], errors, difference)
