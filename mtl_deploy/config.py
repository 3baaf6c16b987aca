"""Run configuration: typed dataclasses with every default in one place, read from a JSON
file (a user's own or a shipped preset) and then overridden by command-line flags.

Each field declares the rule its value follows (`setting(default, rule)`, rules from
`mtl_deploy.schema`); `check_config` is the one function that applies them, to a file,
a preset, a resumed run's saved config and every override alike. `resolve_config` is the
one place where the precedence is decided, `overrides_from_flags` the one place where
`train`'s flags become config keys.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mtl_deploy.errors import InputError
from mtl_deploy.schema import (Bool, Choice, Float, Int, Invalid, Json, Keywords, ListOf, Maybe, Pattern, Table, Text,
                               Variant)


def setting(default: Any, rule: Any):
    """A dataclass field: its default and the `mtl_deploy.schema` rule its value follows."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"rule": rule})
    return field(default=default, metadata={"rule": rule})


SIZES = ListOf(Int(1), min_len=1)
TRUNK = Variant("type", "mlp", Choice("mtl_deploy.models.trunks:TRUNK_TYPES"), {
    "mlp": {"hidden": SIZES, "activation": Choice("mtl_deploy.models.trunks:ACTIVATIONS"),
            "dropout": Float(0, 1, open=("high",))},
    "conv": {"channels": SIZES, "norm": Choice("mtl_deploy.models.trunks:CONV_NORMS")},
    # a user's network: built by a trusted factory, or a Hugging Face model read from a local directory
    "module": {"factory": Text(), "kwargs": Json(), "weights": Maybe(Text()), "freeze": Json((bool, list)),
               "pooling": Choice("mtl_deploy.models.module_trunk:POOLINGS"), "example_inputs": Json()},
    "transformers": {"path": Text(), "freeze": Json((bool, list)),
                     "pooling": Choice("mtl_deploy.models.module_trunk:POOLINGS")},
})
SHARING = Variant("scheme", "hard", Choice("mtl_deploy.models.sharing:SCHEMES"), {  # constructor options
    "hard": {},
    "soft": {"coupling": Choice("mtl_deploy.models.soft:COUPLINGS"), "strength": Float(0)},
    "hierarchical": {"groups": Maybe(ListOf(ListOf(Text(), min_len=1), min_len=1)), "group_hidden": SIZES},
    "cross_stitch": {"self_weight": Float(0, 1)},
    "mmoe": {"experts": Int(1)},
})
TASK = Table({"name": Text(), "kind": Choice("mtl_deploy.data.tasks:TASK_KINDS"), "out_dim": Int(1)},
             required=("name", "kind"))
SYNTHETIC = Table({  # keyword arguments of synthetic_family and SyntheticFamily; the tasks come from data.tasks
    "n_rows": Int(1), "seed": Int(0), "split": Choice("mtl_deploy.data.synthetic:SPLIT_STREAMS"),
    "n_features": Int(1), "latent_dim": Int(1), "relatedness": Float(0, 1), "groups": Maybe(ListOf(Int(0))),
    "noise": Float(0),
})
FRACTION = Float(0, 1, open=("low", "high"))
# where a run trains; "auto" is cuda when torch sees a GPU, else cpu (checked when training starts)
DEVICE = Pattern(r"cpu|auto|cuda(:[0-9]+)?", '"cpu", "cuda", "cuda:N" or "auto"')


@dataclass
class DataConfig:
    """Where the rows come from: the built-in `synthetic` family, a `csv` or an `npz`."""

    source: str = setting("synthetic", Choice("mtl_deploy.data.loaders:SOURCES"))
    path: str | None = setting(None, Maybe(Text()))
    tasks: list[dict] = setting([], ListOf(TASK, unique=True, unique_key="name"))  # csv/npz: [{"name", "kind", "out_dim"}]
    feature_columns: list[str] | None = setting(None, Maybe(ListOf(Text(), min_len=1, unique=True)))  # None: every non-task column
    synthetic: dict = setting({}, SYNTHETIC)
    val_fraction: float = setting(0.2, FRACTION)


@dataclass
class ModelConfig:
    trunk: dict = setting({"type": "mlp", "hidden": [64, 64], "activation": "relu"}, TRUNK)
    # {"scheme": "hard" | "soft" | "hierarchical" | "cross_stitch" | "mmoe", ...scheme options}
    sharing: dict = setting({"scheme": "hard"}, SHARING)


@dataclass
class TrainConfig:
    epochs: int = setting(200, Int(1))
    batch_size: int = setting(64, Int(1))
    lr: float = setting(3e-3, Float(0, open=("low",)))
    backbone_lr: float | None = setting(None, Maybe(Float(0, open=("low",))))  # the trunk's, when it differs (fine-tuning)
    weight_decay: float = setting(0.0, Float(0))
    patience: int = setting(25, Int(1))  # epochs without validation improvement before stopping
    weighting: str = setting("equal", Choice("mtl_deploy.mtl.weighting:WEIGHTINGS"))
    weighting_options: dict = setting({}, Keywords("weighting", "mtl_deploy.mtl.weighting:WEIGHTINGS"))  # e.g. {"alpha": 1.5}
    # none (back-propagate the weighted sum), or a method of mtl.aggregate
    aggregation: str = setting("none", Choice("mtl_deploy.mtl.aggregate:METHODS", extra=("none",)))
    aggregation_options: dict = setting({}, Keywords("aggregation", "mtl_deploy.mtl.aggregate:WEIGHTINGS_OF_GRAMIAN"))
    checkpoint_every: int = setting(200, Int(1))  # minibatch steps between saved training states (for --resume)
    seed: int = setting(0, Int(0))
    device: str = setting("cpu", DEVICE)


@dataclass
class MetaConfig:
    """Meta-learning: the algorithm, the few-shot task family and the episode shape, the
    inner loop (pinned explicitly) and the outer loop."""

    algorithm: str = setting("maml", Choice("mtl_deploy.meta.learners:ALGORITHMS"))
    family: str = setting("sinusoid", Choice("mtl_deploy.data.fewshot:FAMILIES"))
    path: str | None = setting(None, Maybe(Text()))  # npz file or image folder
    class_split: list[float] = setting([0.6, 0.2, 0.2], ListOf(Float(0, 1), length=3, total=1.0))  # train/val/test classes (omniglot: test 0, its runs test)
    image_size: int = setting(28, Int(1))
    translate: int = setting(0, Int(0))  # digits: pixels of random offset, each image on a (8 + translate)² canvas
    ways: int = setting(5, Int(2))
    shots: int = setting(10, Int(1))
    queries: int = setting(10, Int(1))
    meta_batch: int = setting(25, Int(1))  # tasks per outer step
    inner_steps: int = setting(1, Int(1))  # adaptation steps while meta-training
    inner_lr: float = setting(0.01, Float(0, open=("low",)))
    adapt_steps: int = setting(10, Int(0))  # default steps of adapt() and the adapted model
    outer_lr: float = setting(1e-3, Float(0, open=("low",)))
    iterations: int = setting(10000, Int(1))
    val_every: int = setting(500, Int(1))
    val_tasks: int = setting(200, Int(1))
    checkpoint_every: int = setting(500, Int(1))  # steps between saved training states (for --resume)
    seed: int = setting(0, Int(0))
    device: str = setting("cpu", DEVICE)
    rotations: bool = setting(False, Bool())  # omniglot: each character's four quarter turns are classes of their own
    train_ways: int | None = setting(None, Maybe(Int(2)))  # protonet/matching: ways of meta-training episodes (None: ways)
    learned_scale: bool = setting(False, Bool())  # protonet/matching: learn the distance scale (a temperature)
    head_lr: float | None = setting(None, Maybe(Float(0, open=("low",))))  # maml/anil: inner lr of the head (None: inner_lr)
    proto_init: bool = setting(False, Bool())  # maml/anil: each task's head starts from its class prototypes (Proto-MAML)


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
    return check_config(RunConfig(**sections), label)


def check_config(config: RunConfig, label: str = "config") -> RunConfig:
    """Every value of every section against its field's rule, in place (ints given for
    floats become floats); the first bad one raises InputError naming its section and key."""
    for name in SECTIONS:
        section = getattr(config, name)
        for f in dataclasses.fields(section) if section is not None else ():
            setattr(section, f.name, _checked(section, name, f.name, getattr(section, f.name), label))
    return config


def _checked(section: Any, name: str, key: str, value: Any, label: str) -> Any:
    rule = SECTIONS[name].__dataclass_fields__[key].metadata["rule"]
    try:
        return rule.check(value, key, section)
    except Invalid as err:
        raise InputError(f"{label}: [{name}] {err}") from None


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


def apply_overrides(config: RunConfig, overrides: dict[str, Any] | None, label: str = "override") -> RunConfig:
    """Set {"section.field": value} in place, each value checked by its field's rule,
    skipping None values and sections the run does not have."""
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        name, _, attr = key.partition(".")
        if name not in SECTIONS or attr not in SECTIONS[name].__dataclass_fields__:
            raise InputError(f"{label}: unknown config key {key!r}; use 'section.key' with a section of "
                             f"{sorted(SECTIONS)} and a key of that section")
        section = getattr(config, name)
        value = _checked(section, name, attr, value, label)  # checked even where the run lacks the section
        if section is not None:
            setattr(section, attr, value)
    return config


TRAIN_FLAGS = {  # each flag of `train` -> the config keys it sets (in whichever section the run has)
    "data": ("data.path", "meta.path"),
    "epochs": ("train.epochs",),
    "iterations": ("meta.iterations",),
    "seed": ("train.seed", "meta.seed"),
    "checkpoint_every": ("train.checkpoint_every", "meta.checkpoint_every"),
    "device": ("train.device", "meta.device"),
}


def overrides_from_flags(**flags: Any) -> dict[str, Any]:
    """The overrides {"section.key": value} that `train`'s flags (TRAIN_FLAGS) give; a
    flag left at None was not given and sets nothing."""
    return {key: str(value) if isinstance(value, Path) else value
            for flag, value in flags.items() if value is not None for key in TRAIN_FLAGS[flag]}
