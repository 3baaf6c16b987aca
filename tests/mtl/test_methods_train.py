"""Every weighting and aggregation trains end to end from the run config, and every scheme
with them: finite losses, learned weights move, and bad names fail before training."""

import pytest
import torch

from mtl_deploy.config import resolve_config
from mtl_deploy.data import synthetic_family
from mtl_deploy.errors import InputError
from mtl_deploy.mtl import fit
from tests.conftest import quick_config

DATA = synthetic_family(n_rows=64, seed=5)


@pytest.mark.parametrize("weighting, aggregation", [
    ("uncertainty", "none"), ("gradnorm", "none"), ("dwa", "none"), ("random", "none"),
    ("equal", "pcgrad"), ("equal", "cagrad"), ("equal", "upgrad"), ("equal", "nash_mtl"),
    ("equal", "mgda"), ("equal", "imtl_g"), ("equal", "aligned_mtl"), ("uncertainty", "cagrad"),
])
def test_weighting_and_aggregation_train(weighting, aggregation):
    config = quick_config(epochs=3)
    config.train.weighting, config.train.aggregation = weighting, aggregation
    fitted = fit(DATA, config, progress=False)
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in fitted.result.history)
    assert set(fitted.result.val_metrics) == {t.name for t in DATA.tasks}


@pytest.mark.parametrize("scheme", ["soft", "hierarchical", "cross_stitch", "mmoe"])
def test_every_scheme_trains_with_gradient_surgery(scheme):
    config = quick_config(epochs=2)
    config.model.sharing = {"scheme": scheme}
    config.train.aggregation = "pcgrad"
    fitted = fit(DATA, config, progress=False)
    assert type(fitted.model).architecture == scheme


def test_shipped_mtl_presets_resolve_and_train_an_epoch():
    for preset in ("mtl-soft-trace-norm", "mtl-hierarchical", "mtl-gradnorm", "mtl-conflicting-cagrad"):
        config = resolve_config(preset=preset, overrides={"train.epochs": 1})
        fitted = fit(DATA, config, progress=False)
        assert fitted.result.epochs_run == 1, preset


def test_unknown_scheme_and_aggregation_fail_with_the_fix():
    config = quick_config(epochs=1)
    config.model.sharing = {"scheme": "tower"}
    with pytest.raises(InputError, match="unknown sharing scheme 'tower'"):
        fit(DATA, config, progress=False)
    config = quick_config(epochs=1)
    config.train.aggregation = "graddrop"
    with pytest.raises(InputError, match="unknown aggregation 'graddrop'"):
        fit(DATA, config, progress=False)


def test_training_with_per_task_gradients_records_the_task_affinity(tmp_path):
    config = quick_config(epochs=2)
    config.train.aggregation = "upgrad"
    affinity = torch.tensor(fit(DATA, config, progress=False).result.task_affinity)
    assert affinity.shape == (5, 5) and torch.allclose(affinity, affinity.T, atol=1e-6)
    torch.testing.assert_close(affinity.diagonal(), torch.ones(5))
    assert fit(DATA, quick_config(epochs=1), progress=False).result.task_affinity is None
