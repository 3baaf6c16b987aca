"""Built-in and user few-shot task families, each split into meta-train, meta-validation
and meta-test samplers: the MAML paper's sinusoid regression, handwritten digits shipped
with scikit-learn, Omniglot (`data.omniglot`), a user's `.npz` (x, y) and an image folder
(one sub-folder per class)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mtl_deploy.data.episodes import ClassEpisodes, Episodes, split_classes
from mtl_deploy.data.loaders import load_npz
from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.errors import InputError

SPLITS = ("train", "val", "test")
FAMILIES = ("sinusoid", "digits", "npz", "image-folder", "omniglot")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}


class SinusoidTasks:
    """y = A sin(x - φ), A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[-5, 5] (Finn et al., 2017)."""

    input_shape = (1,)

    def __init__(self, shots: int, queries: int):
        self.shots, self.queries = shots, queries

    def sample(self, tasks: int, generator: torch.Generator) -> Episodes:
        amplitude = 0.1 + 4.9 * torch.rand(tasks, 1, 1, generator=generator)
        phase = math.pi * torch.rand(tasks, 1, 1, generator=generator)
        x = 10 * torch.rand(tasks, self.shots + self.queries, 1, generator=generator) - 5  # (T, K + Q, 1)
        y = amplitude * torch.sin(x - phase)
        return Episodes(x[:, :self.shots], y[:, :self.shots], x[:, self.shots:], y[:, self.shots:])


@dataclass
class ClassSampler:
    """A class split with the episode shape fixed: `sample(tasks, generator)`."""

    episodes: ClassEpisodes
    ways: int
    shots: int
    queries: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.episodes.input_shape

    def sample(self, tasks: int, generator: torch.Generator) -> Episodes:
        return self.episodes.sample(tasks, self.ways, self.shots, self.queries, generator)


@dataclass
class FewShotFamily:
    task: TaskSpec  # what the adapted model predicts
    samplers: dict[str, object]  # split name -> sampler with .sample(tasks, generator)
    input_shape: tuple[int, ...]
    train_rows: torch.Tensor | None  # meta-train inputs, for normalisation statistics
    transform: dict | None = None  # how a raw file becomes an input row, for the manifest


def place_on_canvas(images: torch.Tensor, margin: int, seed: int = 0) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, H + margin, W + margin): each image at a random offset on a
    zero canvas. The offsets depend on `seed` alone, so every run sees the same images."""
    n, channels, height, width = images.shape
    offsets = torch.randint(margin + 1, (n, 2), generator=torch.Generator().manual_seed(seed))
    canvas = images.new_zeros(n, channels, height + margin, width + margin)
    for dy in range(margin + 1):
        for dx in range(margin + 1):
            rows = (offsets[:, 0] == dy) & (offsets[:, 1] == dx)
            canvas[rows, :, dy:dy + height, dx:dx + width] = images[rows]
    return canvas


def digits_family(ways: int, shots: int, queries: int, translate: int = 0) -> FewShotFamily:
    """scikit-learn's 8x8 digits, each digit in eight orientations (four quarter turns, each
    also mirrored), each orientation a class of its own (as Omniglot's characters are).
    Disjoint class splits: meta-train on digits 0-3 (32 classes), meta-validate on digit 4
    (8 classes), meta-test on the unseen digits 5-9 (40 classes). With `translate` > 0 each
    image sits at a random offset on a (8 + translate)² canvas, as handwriting is rarely
    centred: pixel templates then stop working, and what a learner must bring is the
    invariance the meta-training digits teach."""
    from sklearn.datasets import load_digits

    if translate < 0:
        raise InputError(f"meta.translate must be >= 0 pixels, got {translate}")
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1)  # (1797, 1, 8, 8)
    labels = torch.tensor(digits.target)
    orientations = [(turns, mirror) for mirror in (False, True) for turns in range(4)]
    xs, ys = [], []
    for index, (turns, mirror) in enumerate(orientations):
        turned = torch.rot90(images, turns, dims=(2, 3))
        xs.append(turned.flip(3) if mirror else turned)
        ys.append(labels + 10 * index)  # class = digit + 10 * orientation
    x, y = place_on_canvas(torch.cat(xs), translate), torch.cat(ys)
    digit_classes = [[d + 10 * i for i in range(len(orientations))] for d in range(10)]
    parts = (sum(digit_classes[:4], []), digit_classes[4], sum(digit_classes[5:], []))
    samplers = {name: ClassSampler(ClassEpisodes(x, y, classes), ways, shots, queries)
                for name, classes in zip(SPLITS, parts)}
    train_rows = x[torch.isin(y, torch.tensor(parts[0]))]
    return FewShotFamily(TaskSpec("class", "multiclass", ways), samplers, tuple(x.shape[1:]), train_rows)


def labelled_family(x: torch.Tensor, y: torch.Tensor, ways: int, shots: int, queries: int,
                    split: tuple[float, float, float], seed: int) -> FewShotFamily:
    """Any labelled rows, split by class into disjoint meta-train / -val / -test sets."""
    if not torch.equal(y, y.round()):
        raise InputError("class labels must be whole numbers")
    y = y.to(torch.int64)
    parts = split_classes(sorted(set(y.tolist())), split, seed)
    for name, classes in zip(SPLITS, parts):
        if len(classes) < ways:
            raise InputError(f"the {name} split has {len(classes)} classes, fewer than {ways} ways; "
                             "use fewer ways, more classes or another split")
    samplers = {name: ClassSampler(ClassEpisodes(x, y, classes), ways, shots, queries)
                for name, classes in zip(SPLITS, parts)}
    train_rows = x[torch.isin(y, torch.tensor(parts[0]))]
    return FewShotFamily(TaskSpec("class", "multiclass", ways), samplers, tuple(x.shape[1:]), train_rows)


def load_image_folder(path: str | Path, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grayscale images resized to image_size², one sub-folder per class (sorted names)."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise InputError(f"image folder {str(root)!r} does not exist; give a folder with one sub-folder per class")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise InputError(f"{root} has no class sub-folders")
    images, labels = [], []
    for label, folder in enumerate(folders):
        for file in sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with Image.open(file) as image:
                    pixels = np.asarray(image.convert("L").resize((image_size, image_size)), dtype=np.float32)
            except (UnidentifiedImageError, OSError) as err:
                raise InputError(f"{file} is not a readable image ({err})") from None
            images.append(torch.from_numpy(pixels / 255.0))
            labels.append(label)
    if not images:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    return torch.stack(images).unsqueeze(1), torch.tensor(labels)


def fewshot_family(family: str, ways: int, shots: int, queries: int, path: str | None = None,
                   split: tuple[float, float, float] = (0.6, 0.2, 0.2), image_size: int = 28,
                   seed: int = 0, translate: int = 0, rotations: bool = False) -> FewShotFamily:
    """The family a meta-learning config names."""
    if shots < 1 or queries < 1 or ways < 2:
        raise InputError(f"episodes need ways >= 2, shots >= 1 and queries >= 1; got {ways}, {shots}, {queries}")
    if translate and family != "digits":
        raise InputError(f"meta.translate applies to the digits family only, not {family!r}")
    if family == "sinusoid":
        tasks = SinusoidTasks(shots, queries)
        return FewShotFamily(TaskSpec("y", "regression"), {s: tasks for s in SPLITS}, (1,), None)
    if family == "digits":
        return digits_family(ways, shots, queries, translate)
    if rotations and family != "omniglot":
        raise InputError(f"meta.rotations applies to the omniglot family only, not {family!r}")
    if family in ("npz", "image-folder", "omniglot") and not path:
        raise InputError(f"family {family!r} needs meta.path (on the command line: train --data PATH)")
    if family == "omniglot":
        from mtl_deploy.data.omniglot import omniglot_family
        return omniglot_family(path, ways, shots, queries, split, image_size, rotations, seed)
    if family == "npz":
        data = load_npz(path, [TaskSpec("y", "regression")])
        return labelled_family(data.x, data.targets["y"].flatten(), ways, shots, queries, split, seed)
    if family == "image-folder":
        return labelled_family(*load_image_folder(path, image_size), ways, shots, queries, split, seed)
    raise InputError(f"unknown few-shot family {family!r}; use one of {', '.join(FAMILIES)}")
