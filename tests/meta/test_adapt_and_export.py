"""Meta-train briefly, adapt with `mtl_deploy.adapt`, and the adapted model saves and
exports with parity proved; bad support sets are refused with a one-line reason."""

import numpy as np
import pytest
import torch

import mtl_deploy
from mtl_deploy.config import MetaConfig, RunConfig
from mtl_deploy.errors import InputError
from mtl_deploy.meta.evaluate import evaluate_fewshot
from mtl_deploy.meta.train import meta_train_and_save

ALGORITHMS = ["maml", "fomaml", "metasgd", "reptile", "anil", "protonet", "matching"]


def brief_config(algorithm: str) -> RunConfig:
    """A few steps of `algorithm`; "maml-conv" is MAML adapting a whole ConvNet on digits."""
    family = "sinusoid" if algorithm in ("maml", "fomaml", "metasgd", "reptile") else "digits"
    trunk = ({"type": "mlp", "hidden": [16, 16], "activation": "relu"} if algorithm not in ("anil", "maml-conv")
             else {"type": "conv", "channels": [4, 4], "norm": "none" if algorithm == "maml-conv" else "batch"})
    algorithm = algorithm.removesuffix("-conv")
    meta = MetaConfig(algorithm=algorithm, family=family, ways=3, shots=2, queries=3, meta_batch=4, inner_steps=2,
                      inner_lr=0.05, adapt_steps=3, iterations=6, val_every=3, val_tasks=5)
    config = RunConfig(meta=meta)
    config.model.trunk = trunk
    return config


@pytest.fixture(scope="module", params=[*ALGORITHMS, "maml-conv"])
def trained(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "ckpt"
    fitted = meta_train_and_save(brief_config(request.param), path, progress=False)
    return request.param.removesuffix("-conv"), path, fitted


def support_set(fitted, seed=0):
    episode = fitted.family.samplers["test"].sample(1, torch.Generator().manual_seed(seed))
    y = episode.support_y[0]
    return episode.support_x[0], y, episode.query_x[0]


def test_adapted_model_exports_with_parity(trained, tmp_path):
    algorithm, path, fitted = trained
    x, y, query = support_set(fitted)
    adapted = mtl_deploy.adapt(path, x, y)
    mtl_deploy.save(adapted, tmp_path / "adapted")
    reloaded = mtl_deploy.load(tmp_path / "adapted")
    with torch.no_grad():
        assert torch.equal(adapted(query)[adapted.task.name], reloaded(query)[reloaded.task.name])
    report = mtl_deploy.export(tmp_path / "adapted", tmp_path / "export", batch_sizes=(1, 7))
    assert report.parity.passed


def test_adaptation_changes_what_it_should(trained):
    algorithm, path, fitted = trained
    x, y, query = support_set(fitted)
    model = mtl_deploy.load(path)
    adapted = mtl_deploy.adapt(model, x, y, steps=3)
    with torch.no_grad():
        before, after = model.embed(query), adapted.embed(query)
    trunk_adapts = algorithm in ("maml", "fomaml", "metasgd", "reptile")
    assert torch.equal(before, after) != trunk_adapts  # ANIL and metric learners keep the trunk
    if algorithm in ("protonet", "matching"):
        assert adapted.head_kind == ("prototypes" if algorithm == "protonet" else "matching")


def test_adapt_zero_steps_is_the_meta_learned_model(trained):
    algorithm, path, fitted = trained
    if algorithm in ("protonet", "matching"):
        pytest.skip("metric learners have no steps")
    x, y, query = support_set(fitted)
    model = mtl_deploy.load(path)
    with torch.no_grad():
        assert torch.allclose(mtl_deploy.adapt(model, x, y, steps=0)(query)[model.task.name],
                              model(query)[model.task.name])


def test_evaluation_table_shape(trained):
    algorithm, _, fitted = trained
    rows = evaluate_fewshot(fitted.model, fitted.family, brief_config(algorithm).meta, episodes=20, steps=(0, 1),
                            pretrain_iterations=3)
    methods = [r.method for r in rows]
    assert methods.count("pretrained") == 2 and methods.count("scratch") == 1
    assert all(r.episodes == 20 and r.ci95 >= 0 for r in rows)


def test_bad_support_sets_are_refused(trained):
    algorithm, path, fitted = trained
    x, y, _ = support_set(fitted)
    with pytest.raises(InputError, match="empty"):
        mtl_deploy.adapt(path, x[:0], y[:0])
    with pytest.raises(InputError, match="the model takes"):
        mtl_deploy.adapt(path, torch.zeros(len(x), 3, 3), y)
    bad = x.clone()
    bad[0].view(-1)[0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        mtl_deploy.adapt(path, bad, y)
    if fitted.model.task.kind == "multiclass":
        with pytest.raises(InputError, match=r"class\(es\) 2 have no support example"):
            mtl_deploy.adapt(path, x[y != 2], y[y != 2])
        with pytest.raises(InputError, match=r"class ids in \[0, 2\]"):
            mtl_deploy.adapt(path, x, y + 5)


def test_adapt_refuses_a_multitask_model(checkpoint_dir):
    with pytest.raises(InputError, match="not meta-learned"):
        mtl_deploy.adapt(checkpoint_dir, np.zeros((2, 50)), np.zeros(2))
