"""Omniglot (Lake et al., 2015) as a few-shot family: the authors' zips or unpacked
folders (alphabet / character / PNG) read in memory, never unpacked to disk; one class
per character (times four quarter turns with `rotations`), class splits that follow
alphabets, several sources combined with repeated characters dropped.

`read_image` is the one transform from a drawing to model input; its description
(`transform`) goes into the checkpoint manifest so that anyone can reproduce it.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mtl_deploy.data.episodes import ClassEpisodes, split_classes
from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.errors import InputError

DRAWING_PIXELS = 105  # the authors' drawings are 105 x 105
EVALUATION_PREFIX = "images_evaluation"  # a source whose name starts so holds the meta-test alphabets


def transform(size: int, rotations: bool = False) -> dict:
    """What `read_image` does, for the manifest."""
    return {"reader": "mtl_deploy.data.omniglot.read_image", "source_pixels": DRAWING_PIXELS, "size": size,
            "grayscale": True, "ink": 1.0, "background": 0.0,
            "resize": "PIL bilinear, antialiased (support scaled on downsampling), float32", "rotations": rotations}


def read_image(path_or_bytes: str | Path | bytes, size: int = 28) -> np.ndarray:
    """A drawing as a (1, size, size) float32 array: ink 1.0, background 0.0, resized with
    antialiasing (bilinear, in float, so no rounding to 8 bits)."""
    from PIL import Image, UnidentifiedImageError

    label = "image bytes" if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    try:
        with Image.open(source) as image:
            gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"{label} is not a readable image ({err})") from None
    ink = Image.fromarray(1.0 - gray).resize((size, size), Image.BILINEAR)
    return np.clip(np.asarray(ink, dtype=np.float32), 0.0, 1.0)[None]


@dataclass
class Source:
    """One zip or folder: its name and {(alphabet, character): [PNG bytes, ...]}."""

    name: str
    characters: dict[tuple[str, str], list[bytes]] = field(default_factory=dict)

    @property
    def evaluation(self) -> bool:
        return self.name.startswith(EVALUATION_PREFIX)


def _characters(entries: dict[tuple[str, ...], Callable[[], bytes]], label: str) -> dict[tuple[str, str], list[bytes]]:
    """Group PNG entries keyed by their path parts ([top/]alphabet/character/file.png)."""
    depths = {len(parts) for parts in entries}
    if not entries or len(depths) != 1 or depths.pop() not in (3, 4):
        raise InputError(f"{label} is not an Omniglot image set: expected PNGs at [set/]alphabet/character/"
                         "file.png, as in the authors' images_background.zip")
    characters: dict[tuple[str, str], list[bytes]] = {}
    for parts in sorted(entries):
        characters.setdefault((parts[-3], parts[-2]), []).append(entries[parts]())
    return characters


def read_zip(path: Path) -> Source:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(f"{path} is not a readable zip ({err}); give the authors' Omniglot zips") from None
    with archive:
        entries = {tuple(n.split("/")): (lambda n=n: archive.read(n)) for n in archive.namelist()
                   if n.lower().endswith(".png") and not n.startswith("__MACOSX")}
        return Source(path.stem, _characters(entries, str(path)))


def read_folder(path: Path) -> Source:
    entries = {p.relative_to(path).parts: p.read_bytes for p in path.rglob("*") if p.suffix.lower() == ".png"}
    return Source(path.name, _characters(entries, str(path)))


def read_sources(path: str | Path) -> list[Source]:
    """A zip, an unpacked set (alphabet/character/PNG), or a folder holding zips or sets."""
    path = Path(path)
    if path.is_file():
        return [read_zip(path)]
    if not path.is_dir():
        raise InputError(f"Omniglot path {str(path)!r} does not exist; give the folder that holds "
                         "images_background_small1.zip (or the zips themselves)")
    zips = sorted(p for p in path.glob("images_*.zip") if p.stem != "all_runs")
    sets = sorted(p for p in path.glob("images_*") if p.is_dir())
    if zips or sets:
        return [read_zip(p) for p in zips] + [read_folder(p) for p in sets]
    return [read_folder(path)]


@dataclass
class Characters:
    """Every distinct character of the sources, in order, with its alphabet."""

    keys: list[tuple[str, str]]  # (alphabet, character)
    images: list[list[bytes]]
    evaluation_alphabets: set[str]


def combine(sources: list[Source]) -> Characters:
    """One list of characters; a character already read from an earlier source (small1 and
    small2 share Greek and Latin) is dropped."""
    keys, images, evaluation = [], [], set()
    seen = set()
    for source in sources:
        for key, drawings in source.characters.items():
            if key in seen:
                continue
            seen.add(key)
            keys.append(key)
            images.append(drawings)
            if source.evaluation:
                evaluation.add(key[0])
    return Characters(keys, images, evaluation)


def alphabet_splits(characters: Characters, fractions: tuple[float, float, float], seed: int) -> list[list[str]]:
    """Disjoint train / val / test alphabet lists. Evaluation sources are the test split;
    the background alphabets split by `fractions` (test share included only when there is
    no evaluation source)."""
    alphabets = sorted({a for a, _ in characters.keys})
    background = [a for a in alphabets if a not in characters.evaluation_alphabets]
    if characters.evaluation_alphabets:
        train_share = fractions[0] / max(fractions[0] + fractions[1], 1e-9)
        fractions = (train_share, 1.0 - train_share, 0.0)
    indices = split_classes(list(range(len(background))), fractions, seed)
    train, val, test = ([background[i] for i in part] for part in indices)
    return [sorted(train), sorted(val), sorted(test) + sorted(characters.evaluation_alphabets)]


def omniglot_arrays(characters: Characters, size: int, rotations: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, 1, size, size), y (N,): class = character index * turns + quarter turns."""
    turns = 4 if rotations else 1
    xs, ys = [], []
    for index, drawings in enumerate(characters.images):
        pixels = np.stack([read_image(png, size) for png in drawings])  # (drawers, 1, size, size)
        for turn in range(turns):
            xs.append(np.rot90(pixels, turn, axes=(2, 3)))
            ys.append(np.full(len(pixels), index * turns + turn))
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(xs))), torch.from_numpy(np.concatenate(ys))


def omniglot_family(path: str | Path, ways: int, shots: int, queries: int, split: tuple[float, float, float],
                    size: int = 28, rotations: bool = False, seed: int = 0):
    """The family: meta-train and meta-validate on disjoint background alphabets, meta-test
    on the evaluation alphabets (or a share of the background ones)."""
    from mtl_deploy.data.fewshot import SPLITS, ClassSampler, FewShotFamily

    characters = combine(read_sources(path))
    x, y = omniglot_arrays(characters, size, rotations)
    turns = 4 if rotations else 1
    alphabet_of = [a for a, _ in characters.keys]
    samplers = {}
    for name, alphabets in zip(SPLITS, alphabet_splits(characters, split, seed)):
        classes = [i * turns + t for i, a in enumerate(alphabet_of) if a in alphabets for t in range(turns)]
        if not classes:
            continue  # no meta-test alphabets: evaluate on the one-shot runs instead
        if len(classes) < ways:
            raise InputError(f"the Omniglot {name} split ({', '.join(alphabets)}) has {len(classes)} classes, "
                             f"fewer than {ways} ways; use fewer ways, meta.rotations or another meta.class_split")
        samplers[name] = ClassSampler(ClassEpisodes(x, y, classes), ways, shots, queries)
    if "train" not in samplers or "val" not in samplers:
        raise InputError(f"{path}: meta.class_split {list(split)} leaves no meta-train or meta-validation "
                         "alphabet; give more background alphabets or another split")
    train_rows = x[torch.isin(y, torch.tensor(samplers["train"].episodes.classes))]
    return FewShotFamily(TaskSpec("class", "multiclass", ways), samplers, (1, size, size), train_rows,
                         transform(size, rotations))
