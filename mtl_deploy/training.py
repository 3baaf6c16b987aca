"""One entry point for both kinds of run a config describes: multi-task training
(sections data/model/train) or meta-learning (a [meta] section), in one process or as
one rank of a torchrun launch, fresh or resumed from the run directory's saved state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtl_deploy.runs import distributed
from mtl_deploy.config import RunConfig, apply_overrides, check_config, config_from_dict, resolve_config
from mtl_deploy.errors import InputError
from mtl_deploy.meta.train import MetaFitted, meta_train_and_save
from mtl_deploy.mtl.fit import Fitted, train_run
from mtl_deploy.runs.device import training_device
from mtl_deploy.runs.directory import EXTENDABLE, RunDirectory


def run_config(config_path: str | Path | None, preset: str | None, overrides: dict[str, Any] | None,
               out: str | Path, resume: bool) -> RunConfig:
    """The config of a run: from CONFIG or the preset; when resuming, the saved one, which
    a CONFIG or preset given again must match (up to longer training)."""
    if not resume:
        return resolve_config(config_path, preset, overrides)
    saved = RunDirectory(out).saved_config()
    config = apply_overrides(config_from_dict(saved, f"{out} config.json"), overrides)
    if config_path is None and preset is None:
        return config
    given = resolve_config(config_path, preset, overrides)
    given_fields, saved_fields = _fields(given), _fields(config)
    differences = sorted(key for key in given_fields.keys() | saved_fields.keys()
                         if key not in EXTENDABLE and given_fields.get(key) != saved_fields.get(key))
    if differences:
        raise InputError(f"the config differs from the run being resumed in {', '.join(differences)}; "
                         "resume with the run's own config (or give none)")
    return given


def _fields(config: RunConfig) -> dict[str, Any]:
    """{"section.field": value} of every section the run has."""
    return {f"{section}.{key}": value for section, fields in config.to_dict().items()
            for key, value in (fields or {}).items()}


def train(config: RunConfig, out_dir: str | Path, progress: bool = True, resume: bool = False) -> Fitted | MetaFitted:
    """Train a multi-task model, or meta-train a few-shot model (a config with a [meta]
    section), into the run directory `out_dir`; under torchrun, as this process's rank.
    A config built in Python is checked like one read from a file, and its device
    (meta.device or train.device) before anything is written."""
    check_config(config, "config")
    device = training_device(config.meta.device if config.meta is not None else config.train.device)
    group = distributed.from_environment(device)
    if config.meta is not None:
        fitted = meta_train_and_save(config, out_dir, progress, resume, group)
    else:
        fitted = train_run(config, out_dir, progress, resume, group)
    group.barrier()  # the run directory is complete before any rank goes on
    return fitted
