"""CSV and npz loaders, the synthetic family, and datasets from a config."""

import numpy as np
import pytest
import torch

from mtl_deploy.config import DataConfig
from mtl_deploy.data import TaskSpec, load_csv, load_npz, synthetic_family
from mtl_deploy.data.loaders import dataset_from_config
from mtl_deploy.errors import InputError

TASKS = [TaskSpec("price", "regression"), TaskSpec("churn", "binary")]


def write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header), *(",".join(map(str, r)) for r in rows)]) + "\n")
    return path


def test_csv_features_are_the_other_columns(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["a", "price", "b", "churn"], [[1, 2.5, 3, 0], [4, 5.5, 6, 1]])
    data = load_csv(path, TASKS)
    assert torch.equal(data.x, torch.tensor([[1.0, 3.0], [4.0, 6.0]]))
    assert data.targets["price"].flatten().tolist() == [2.5, 5.5]
    assert data.targets["churn"].tolist() == [0, 1]
    chosen = load_csv(path, TASKS, feature_columns=["b"])
    assert chosen.input_shape == (1,)


def test_csv_unknown_column_lists_the_header(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["a", "price", "churn"], [[1, 2, 0]])
    with pytest.raises(InputError, match=r"no column\(s\) named \['nope'\]; the header has \['a', 'price', 'churn'\]"):
        load_csv(path, TASKS, feature_columns=["nope"])


def test_csv_non_numeric_and_nan(tmp_path):
    with pytest.raises(InputError, match=r"line 2, column .price.: .x. is not a number"):
        load_csv(write_csv(tmp_path / "a.csv", ["a", "price", "churn"], [[1, "x", 0]]), TASKS)
    with pytest.raises(InputError, match="NaN or inf"):
        load_csv(write_csv(tmp_path / "b.csv", ["a", "price", "churn"], [["nan", 1, 0]]), TASKS)


def test_npz_round_trip_and_bad_archives(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((3, 2, 4, 4)), price=np.arange(3.0), churn=np.array([0, 1, 1]))
    data = load_npz(path, TASKS)
    assert data.input_shape == (2, 4, 4)
    with pytest.raises(InputError, match=r"no array\(s\) named \['segment'\]"):
        load_npz(path, [TaskSpec("segment", "multiclass", 3)])
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip at all")
    with pytest.raises(InputError, match="not a readable .npz"):
        load_npz(corrupt, TASKS)
    with pytest.raises(InputError, match="does not exist"):
        load_npz(tmp_path / "missing.npz", TASKS)


def test_npz_with_object_arrays_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, x=np.ones((2, 2)), price=np.array([object(), object()], dtype=object), churn=np.zeros(2))
    with pytest.raises(InputError, match="not a readable .npz"):
        load_npz(path, TASKS)


def test_synthetic_family_is_reproducible_and_holdout_is_fresh():
    a, b = synthetic_family(n_rows=50, seed=3), synthetic_family(n_rows=50, seed=3)
    assert torch.equal(a.x, b.x) and all(torch.equal(a.targets[k], b.targets[k]) for k in a.targets)
    holdout = synthetic_family(n_rows=50, seed=3, split="holdout")
    assert not torch.equal(a.x, holdout.x)


def test_relatedness_controls_how_alike_the_tasks_are():
    def target_correlation(relatedness):
        data = synthetic_family(n_rows=4000, relatedness=relatedness, latent_dim=1,
                                tasks=(TaskSpec("a", "regression"), TaskSpec("b", "regression")))
        return abs(float(torch.corrcoef(torch.cat([data.targets["a"], data.targets["b"]], 1).T)[0, 1]))

    assert target_correlation(1.0) > 0.9
    assert target_correlation(0.0) < 0.3


def test_dataset_from_config_needs_path_and_tasks(tmp_path):
    with pytest.raises(InputError, match="needs data.path"):
        dataset_from_config(DataConfig(source="csv", tasks=[{"name": "price", "kind": "regression"}]))
    with pytest.raises(InputError, match="list the tasks"):
        dataset_from_config(DataConfig(source="npz", path="x.npz"))
    with pytest.raises(InputError, match="unknown data source"):
        dataset_from_config(DataConfig(source="parquet"))
    assert len(dataset_from_config(DataConfig(synthetic={"n_rows": 30}))) == 30
