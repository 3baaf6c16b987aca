"""Run configuration: typed dataclasses with every default in one place, read from a JSON
file (a user's own or a shipped preset) and then overridden by command-line flags.

`resolve_config` is the one place where that precedence is decided.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mtl_deploy.errors import InputError


@dataclass
class DataConfig:
    """Where the rows come from: the built-in `synthetic` family, a `csv` or an `npz`."""

    source: str = "synthetic"
    path: str | None = None
    tasks: list[dict] = field(default_factory=list)  # csv/npz: [{"name", "kind", "out_dim"}]
    feature_columns: list[str] | None = None  # csv: None = every non-task column
    synthetic: dict = field(default_factory=dict)  # keyword arguments of synthetic_family
    val_fraction: float = 0.2


@dataclass
class ModelConfig:
    trunk: dict = field(default_factory=lambda: {"type": "mlp", "hidden": [64, 64], "activation": "relu"})
    # {"scheme": "hard" | "soft" | "hierarchical" | "cross_stitch" | "mmoe", ...scheme options}
    sharing: dict = field(default_factory=lambda: {"scheme": "hard"})


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.0
    patience: int = 25  # epochs without validation improvement before stopping
    weighting: str = "equal"  # equal, static, uncertainty, gradnorm, dwa, random
    weighting_options: dict = field(default_factory=dict)  # e.g. {"alpha": 1.5} for gradnorm
    aggregation: str = "none"  # none (back-propagate the weighted sum), or a method of mtl.aggregate
    aggregation_options: dict = field(default_factory=dict)  # e.g. {"c": 0.5} for cagrad
    checkpoint_every: int = 200  # minibatch steps between saved training states (for --resume)
    seed: int = 0


@dataclass
class MetaConfig:
    """Meta-learning: the algorithm, the few-shot task family and the episode shape, the
    inner loop (pinned explicitly) and the outer loop."""

    algorithm: str = "maml"  # maml, fomaml, metasgd, anil, reptile, protonet, matching
    family: str = "sinusoid"  # sinusoid, digits, npz (arrays x, y), image-folder, omniglot
    path: str | None = None  # npz file, image folder, or Omniglot zips / folders
    class_split: list[float] = field(default_factory=lambda: [0.6, 0.2, 0.2])  # train/val/test classes
    image_size: int = 28
    translate: int = 0  # digits: pixels of random offset, each image on a (8 + translate)² canvas
    ways: int = 5
    shots: int = 10
    queries: int = 10
    meta_batch: int = 25  # tasks per outer step
    inner_steps: int = 1  # adaptation steps while meta-training
    inner_lr: float = 0.01
    adapt_steps: int = 10  # default steps of adapt() and the adapted model
    outer_lr: float = 1e-3
    iterations: int = 10000
    val_every: int = 500
    val_tasks: int = 200
    checkpoint_every: int = 500  # steps between saved training states (for --resume)
    seed: int = 0
    rotations: bool = False  # omniglot: each character's four quarter turns are classes of their own
    train_ways: int | None = None  # protonet/matching: ways of meta-training episodes (None: ways)
    learned_scale: bool = False  # protonet/matching: learn the distance scale (a temperature)
    head_lr: float | None = None  # maml/anil: inner learning rate of the head (None: inner_lr)
    proto_init: bool = False  # maml/anil: each task's head starts from its class prototypes (Proto-MAML)


@dataclass
class RunConfig:
    """A multi-task run uses data/model/train; a meta-learning run uses meta/model."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    meta: MetaConfig | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "meta": MetaConfig}


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in resources.files("mtl_deploy.presets").iterdir()
                  if p.name.endswith(".json"))


def _parse_json(text: str, label: str) -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{label} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{label} must hold a JSON object with sections {sorted(SECTIONS)}")
    return data


def config_from_dict(data: dict, label: str = "config") -> RunConfig:
    """A RunConfig from nested dicts, refusing unknown sections and keys by name."""
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise InputError(f"{label}: unknown section(s) {unknown}; allowed: {sorted(SECTIONS)}")
    sections = {}
    for name, cls in SECTIONS.items():
        if name == "meta" and data.get(name) is None:
            continue  # no (or a null) [meta] section: a multi-task run
        values = data.get(name, {})
        if not isinstance(values, dict):
            raise InputError(f"{label}: section [{name}] must be a JSON object")
        allowed = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(values) - allowed)
        if extra:
            raise InputError(f"{label}: unknown key(s) {extra} in [{name}]; allowed: {sorted(allowed)}")
        sections[name] = cls(**values)
    return RunConfig(**sections)


def resolve_config(config_path: str | Path | None = None, preset: str | None = None,
                   overrides: dict[str, Any] | None = None) -> RunConfig:
    """File (or preset) first, then `overrides` of the form {"train.seed": 3}; None values
    in `overrides` mean "flag not given" and leave the file's value; overrides of a
    section the run does not have (meta.* in a multi-task run) are ignored."""
    if (config_path is None) == (preset is None):
        raise InputError("give either a CONFIG file or --preset NAME (one of: " + ", ".join(preset_names()) + ")")
    if preset is not None:
        if preset not in preset_names():
            raise InputError(f"unknown preset {preset!r}; choose one of: {', '.join(preset_names())}")
        label = f"preset {preset}"
        text = resources.files("mtl_deploy.presets").joinpath(f"{preset}.json").read_text()
    else:
        label = str(config_path)
        if not Path(config_path).is_file():
            raise InputError(f"config file {label!r} does not exist; check the path or use --preset")
        text = Path(config_path).read_text()
    data = _parse_json(text, label)
    return apply_overrides(config_from_dict(data, label), overrides)


def apply_overrides(config: RunConfig, overrides: dict[str, Any] | None) -> RunConfig:
    """Set {"section.field": value} in place, skipping None values and absent sections."""
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        section, attr = key.split(".")
        if getattr(config, section) is not None:
            setattr(getattr(config, section), attr, value)
    return config
