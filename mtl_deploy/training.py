"""One entry point for both kinds of run a config describes: multi-task training
(sections data/model/train) or meta-learning (a [meta] section)."""

from __future__ import annotations

from pathlib import Path

from mtl_deploy.config import RunConfig
from mtl_deploy.meta.train import MetaFitted, meta_train_and_save
from mtl_deploy.mtl.fit import Fitted, train


def train_to_checkpoint(config: RunConfig, out_dir: str | Path, progress: bool = True) -> Fitted | MetaFitted:
    if config.meta is not None:
        return meta_train_and_save(config, out_dir, progress)
    return train(config, out_dir, progress)
