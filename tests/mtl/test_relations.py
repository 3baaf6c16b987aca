"""Task relations: the analysis recovers the planted task groups of the synthetic family,
writes its heatmaps and JSON all-or-nothing, and refuses data that does not fit."""

import json

import pytest
import torch

import mtl_deploy
from mtl_deploy.data import TaskSpec, synthetic_family
from mtl_deploy.errors import InputError
from mtl_deploy.mtl import analyze, fit
from mtl_deploy.training import train
from mtl_deploy.mtl.relations import suggest_groups, target_correlation
from tests.conftest import quick_config

TASKS = tuple(TaskSpec(f"t{i}", "regression") for i in range(6))
PLANTED = [0, 1, 0, 1, 2, 2]
FAMILY = {"tasks": TASKS, "groups": PLANTED, "relatedness": 1.0, "latent_dim": 1, "noise": 0.0}


@pytest.fixture(scope="module")
def planted_checkpoint(tmp_path_factory):
    data = synthetic_family(n_rows=300, seed=0, **FAMILY)
    fitted = fit(data, quick_config(epochs=30), progress=False)
    path = tmp_path_factory.mktemp("relations") / "ckpt"
    mtl_deploy.save(fitted.model, path)
    return path


def test_analysis_recovers_the_planted_groups(planted_checkpoint, tmp_path):
    holdout = {k: v for k, v in FAMILY.items() if k != "tasks"} | {"n_rows": 512, "seed": 0, "split": "holdout"}
    relations = analyze(planted_checkpoint, holdout, tmp_path / "out")
    planted = [["t0", "t2"], ["t1", "t3"], ["t4", "t5"]]
    assert relations.groups_by_affinity == planted
    assert relations.groups_by_correlation == planted
    affinity = torch.tensor(relations.affinity)
    assert torch.allclose(affinity, affinity.T) and torch.allclose(affinity.diagonal(), torch.ones(6))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["affinity.png", "relations.json",
                                                                    "target_correlation.png"]
    written = json.loads((tmp_path / "out" / "relations.json").read_text())
    assert written["groups_by_affinity"] == planted and written["tasks"] == [t.name for t in TASKS]
    assert (tmp_path / "out" / "affinity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_target_correlation_and_grouping_by_hand():
    data = synthetic_family(n_rows=400, seed=1, relatedness=1.0, latent_dim=1, noise=0.0,
                            tasks=(TaskSpec("a", "regression"), TaskSpec("b", "regression"), TaskSpec("c", "binary")))
    corr = target_correlation(data)
    assert corr[0, 1] > 0.99  # one latent code, two read-outs: perfectly (anti-)correlated targets
    similarity = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.1], [0.0, 0.1, 1.0]])
    assert suggest_groups(similarity, ["x", "y", "z"], 0.5) == [["x", "y"], ["z"]]
    assert suggest_groups(similarity, ["x", "y", "z"], 0.95) == [["x"], ["y"], ["z"]]


def test_data_that_does_not_fit_is_refused_and_nothing_is_written(planted_checkpoint, tmp_path):
    wrong = synthetic_family(n_rows=20, seed=0, n_features=7, tasks=TASKS)
    with pytest.raises(InputError, match="the model takes"):
        analyze(planted_checkpoint, wrong, tmp_path / "out")
    with pytest.raises(InputError, match="unknown task"):
        analyze(planted_checkpoint, synthetic_family(n_rows=20, seed=0), tmp_path / "out")
    with pytest.raises(InputError, match=r"\.npz or \.csv"):
        analyze(planted_checkpoint, tmp_path / "rows.parquet", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_affinity_recorded_during_training_travels_with_the_checkpoint(tmp_path):
    config = quick_config(epochs=2)
    config.data.synthetic = {"n_rows": 60, "seed": 0}
    config.train.aggregation = "pcgrad"
    fitted = train(config, tmp_path / "ckpt", progress=False)
    relations = analyze(tmp_path / "ckpt", {"n_rows": 64, "seed": 0, "split": "holdout"}, tmp_path / "out")
    assert relations.affinity_during_training == fitted.result.task_affinity
    assert json.loads((tmp_path / "out" / "relations.json").read_text())["affinity_during_training"] is not None


def test_one_grouping_is_recommended_with_its_reason():
    from mtl_deploy.mtl.relations import recommend

    a, b = [["x", "y"], ["z"]], [["x"], ["y", "z"]]
    weak = torch.tensor([[1.0, 0.1, 0.0], [0.1, 1.0, 0.2], [0.0, 0.2, 1.0]])
    strong = torch.tensor([[1.0, 0.9, -0.6], [0.9, 1.0, -0.7], [-0.6, -0.7, 1.0]])
    assert recommend(weak, a, a) == (a, "gradient affinity and target correlation agree")
    groups, reason = recommend(weak, a, b)
    assert groups == b and "target correlation" in reason and "weak" in reason
    groups, reason = recommend(strong, a, b)
    assert groups == a and "strong" in reason
