"""Task files: a task adapted once is saved (a few KB, no pickle) and a later process
without PyTorch loads it and predicts exactly what the adapted task predicted, for metric
heads (prototypes, matching) and fine-tuned ones (ANIL's head, MAML's whole MLP). Bad task
files are refused in one line (tests/test_bad_input.py, the fewshot-task-file rows)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import mtl_deploy
from mtl_deploy.errors import InputError
from mtl_deploy.meta.train import meta_train_and_save
from mtl_deploy.runtime import FewShotAdapter
from tests.meta.test_adapt_and_export import brief_config

LOAD = """
import sys
sys.modules["torch"] = None  # the device has no PyTorch
import numpy as np
from mtl_deploy.runtime import FewShotAdapter
adapter, task, query, out = sys.argv[1:]
np.save(out, FewShotAdapter(adapter).load(task).predict(np.load(query)))
"""


@pytest.fixture(scope="module", params=["protonet", "matching", "anil", "maml"])
def adapter(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"task-{request.param}")
    meta_train_and_save(brief_config(request.param), root / "ckpt", progress=False)
    mtl_deploy.export(root / "ckpt", root / "adapter", format="adapter")
    return root


def episode(model, seed: int):
    """Support rows, labels (3 shots of every class) and 11 query rows on the training scale."""
    generator = torch.Generator().manual_seed(seed)
    scale = model.normalize.std, model.normalize.mean
    rows = lambda n: torch.randn(n, *model.input_shape, generator=generator) * scale[0] + scale[1]  # noqa: E731
    ways = model.task.out_dim
    labels = (torch.randn(ways * 3, 1, generator=generator) if model.task.kind == "regression"
              else torch.arange(ways).repeat(3))
    return rows(ways * 3), labels, rows(11)


def test_a_saved_task_predicts_the_same_in_a_process_without_torch(adapter, tmp_path):
    model = mtl_deploy.load(adapter / "ckpt")
    support_x, support_y, query_x = episode(model, seed=5)
    task = FewShotAdapter(adapter / "adapter").adapt(support_x.numpy(), support_y.numpy())
    want = task.predict(query_x.numpy())
    path = task.save(tmp_path / "task.npz")
    assert path.stat().st_size < 16_000 and not [p for p in tmp_path.iterdir() if p != path]  # no temporary left
    np.save(tmp_path / "query.npy", query_x.numpy())
    done = subprocess.run([sys.executable, "-c", LOAD, str(adapter / "adapter"), str(path), str(tmp_path / "query.npy"),
                           str(tmp_path / "pred.npy")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert np.abs(np.load(tmp_path / "pred.npy") - want).max() <= 1e-5
    with torch.no_grad():  # and what it predicts is the adapted model's
        adapted = mtl_deploy.adapt(model, support_x, support_y)(query_x)[model.task.name].numpy()
    np.testing.assert_allclose(want, adapted, atol=1e-4, rtol=1e-4)


def test_the_state_is_what_the_head_keeps(adapter):
    device = FewShotAdapter(adapter / "adapter")
    model = mtl_deploy.load(adapter / "ckpt")
    support_x, support_y, _ = episode(model, seed=6)
    state = device.adapt(support_x.numpy(), support_y.numpy()).state
    algorithm = device.manifest["algorithm"]
    if algorithm == "protonet":
        assert list(state) == ["prototypes"] and state["prototypes"].shape[0] == model.task.out_dim
    elif algorithm == "matching":
        assert list(state) == ["support_embeddings", "support_onehot"]
        np.testing.assert_array_equal(state["support_onehot"].argmax(1), support_y.numpy())
    else:  # ANIL adapts the head, MAML every layer
        adapted = model.adapted_parameters()[-2:] if algorithm == "anil" else model.adapted_parameters()
        assert [v.shape for v in state.values()] == [tuple(p.shape) for p in adapted]


def test_saving_again_replaces_the_file_and_a_task_keeps_to_its_model(adapter, tmp_path):
    device = FewShotAdapter(adapter / "adapter")
    model = mtl_deploy.load(adapter / "ckpt")
    first, second = (device.adapt(x.numpy(), y.numpy()) for x, y, _ in (episode(model, 1), episode(model, 2)))
    query = episode(model, 3)[2].numpy()
    path = first.save(tmp_path / "task.npz")
    second.save(path)
    np.testing.assert_array_equal(device.load(path).predict(query), second.predict(query))
    with pytest.raises(InputError, match=r"query_x must be"):
        device.load(path).predict(np.zeros((2, 99)))
