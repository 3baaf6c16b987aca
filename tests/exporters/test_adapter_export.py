"""Adapter graphs: a device with only onnxruntime and numpy adapts a meta-trained model
from a support set and predicts the query set exactly as `mtl_deploy.adapt` + forward."""

import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

import mtl_deploy
from mtl_deploy.errors import InputError, MtlDeployError
from mtl_deploy.meta.train import meta_train_and_save
from tests.meta.test_adapt_and_export import brief_config

SCRIPT = """
import sys, json
sys.modules["torch"] = None  # the device has no PyTorch
import numpy as np
from mtl_deploy.runtime import Predictor
case = np.load(sys.argv[2])
task = Predictor(sys.argv[1]).adapt(case["support_x"], case["support_y"])
np.save(sys.argv[3], task.predict(case["query_x"]))
"""


@pytest.fixture(scope="module", params=["protonet", "matching", "anil", "maml", "metasgd"])
def adapter(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"adapter-{request.param}")
    meta_train_and_save(brief_config(request.param), root / "ckpt", progress=False)
    report = mtl_deploy.export(root / "ckpt", root / "adapter", format="adapter")
    return request.param, root, report


def test_graph_is_standard_and_dynamic(adapter):
    algorithm, root, report = adapter
    proto = onnx.load(str(root / "adapter" / "adapter.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    assert [i.name for i in proto.graph.input] == ["support_x", "support_y", "query_x"]
    assert [o.name for o in proto.graph.output] == ["query_pred"]
    assert report.parity.passed and report.manifest["parity"]["runtimes"] == ["onnx.reference", "onnxruntime"]
    ways_axis = proto.graph.input[1].type.tensor_type.shape.dim[1]
    assert bool(ways_axis.dim_param) == (algorithm in ("protonet", "matching"))


def test_the_halves_are_standard_graphs_of_the_state_the_manifest_names(adapter, tmp_path):
    """adapt.onnx (support set -> state) and predict.onnx (query rows, state -> predictions)
    are checked like the one graph and proved with it; verify checks their hashes."""
    from mtl_deploy.exporters import verify_export

    algorithm, root, report = adapter
    state = report.manifest["state"]
    names = [entry["name"] for entry in state["arrays"]]
    adapt, predict = (onnx.load(str(root / "adapter" / state[half])) for half in ("adapt", "predict"))
    for proto in (adapt, predict):
        onnx.checker.check_model(proto, full_check=True)
        assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    io = lambda proto: ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output])  # noqa: E731
    assert io(adapt) == (["support_x", "support_y"], names) and io(predict) == (["query_x", *names], ["query_pred"])
    for value, entry in zip(adapt.graph.output, state["arrays"]):  # a task's varying axes are symbolic, the rest fixed
        dims = value.type.tensor_type.shape.dim
        assert [d if isinstance(d, int) else None for d in entry["shape"]] == [None if d.dim_param else d.dim_value
                                                                               for d in dims]
    parity = report.manifest["parity"]["outputs"]
    assert sorted(parity) == ["query_pred", "query_pred from the state"] and all(o["passed"] for o in parity.values())
    if algorithm == "protonet":
        copy = shutil.copytree(root / "adapter", tmp_path / "adapter")
        (copy / "predict.onnx").write_bytes((copy / "predict.onnx").read_bytes() + b"\0")
        with pytest.raises(MtlDeployError, match="predict.onnx does not match the hash"):
            verify_export(copy)


def test_device_without_torch_matches_pytorch_adapt(adapter, tmp_path):
    algorithm, root, _ = adapter
    model = mtl_deploy.load(root / "ckpt")
    ways = model.task.out_dim
    generator = torch.Generator().manual_seed(3)
    support_x = torch.randn(ways * 4, *model.input_shape, generator=generator) * model.normalize.std + model.normalize.mean
    query_x = torch.randn(9, *model.input_shape, generator=generator) * model.normalize.std + model.normalize.mean
    if model.task.kind == "regression":
        support_y = torch.randn(len(support_x), 1, generator=generator)
    else:
        support_y = torch.arange(ways).repeat(4)
    np.savez(tmp_path / "case.npz", support_x=support_x.numpy(), support_y=support_y.numpy(), query_x=query_x.numpy())
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(root / "adapter"), str(tmp_path / "case.npz"),
                             str(tmp_path / "pred.npy")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with torch.no_grad():
        want = mtl_deploy.adapt(model, support_x, support_y)(query_x)[model.task.name].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "pred.npy"), want, atol=1e-4, rtol=1e-4)


def test_adapter_refuses_bad_support_sets(adapter):
    from mtl_deploy.runtime import FewShotAdapter

    algorithm, root, _ = adapter
    device = FewShotAdapter(root / "adapter")
    rows = np.zeros((4, *device.row_shape), dtype=np.float32)
    with pytest.raises(InputError, match="support_x must be"):
        device.adapt(np.zeros((4, 99)), np.zeros(4))
    with pytest.raises(InputError, match="NaN"):
        device.adapt(np.full_like(rows, np.nan), np.zeros(4))
    if device.task["kind"] == "multiclass":
        with pytest.raises(InputError, match="have no support row"):
            device.adapt(rows, np.array([0, 0, 2, 2]))


def test_adapter_needs_a_meta_learned_model(checkpoint_dir, tmp_path):
    with pytest.raises(InputError, match="not meta-learned"):
        mtl_deploy.export(checkpoint_dir, tmp_path / "a", format="adapter")


def test_adapter_refuses_a_whole_convnet(tmp_path):
    meta_train_and_save(brief_config("maml-conv"), tmp_path / "ckpt", progress=False)
    with pytest.raises(InputError, match="adapts a whole ConvNet"):
        mtl_deploy.export(tmp_path / "ckpt", tmp_path / "adapter", format="adapter")
    assert not (tmp_path / "adapter").exists()


def test_adapter_parity_runs_on_the_checkpoints_real_rows(adapter, tmp_path):
    algorithm, root, report = adapter
    assert report.manifest["parity"]["inputs"] == ["real"] and report.manifest["parity"]["passed"]
    if algorithm != "protonet":
        return
    in_memory = mtl_deploy.load(root / "ckpt")  # a bare model carries no rows: random ones on the training scale
    assert mtl_deploy.export(in_memory, tmp_path / "a", format="adapter").manifest["parity"]["inputs"] == ["random"]
    with pytest.raises(InputError, match="shape"):
        mtl_deploy.export(root / "ckpt", tmp_path / "b", format="adapter", sample_inputs=torch.zeros(4, 3))
    assert not (tmp_path / "b").exists()


def test_adapter_exports_verify_with_and_without_the_checkpoint(adapter, tmp_path):
    from mtl_deploy.inspection import describe
    from mtl_deploy.exporters import verify_export

    algorithm, root, _ = adapter
    alone = verify_export(root / "adapter")
    assert alone.passed and alone.runtimes == ["onnxruntime"] and alone.comparisons == 3
    against = verify_export(root / "adapter", root / "ckpt")
    assert against.passed and against.runtimes == ["onnx.reference", "onnxruntime"]
    assert "adapter (" in describe(root / "adapter")


@pytest.mark.parametrize("algorithm, options", [("protonet", {"learned_scale": True}),
                                                ("matching", {"learned_scale": True}),
                                                ("anil", {"proto_init": True, "head_lr": 0.3})])
def test_adapter_graph_keeps_the_learner_options(tmp_path, algorithm, options):
    """A learned metric scale, Proto-MAML's head and a head learning rate are in the graph:
    its parity with mtl_deploy.adapt is proved by the export."""
    config = brief_config(algorithm)
    for key, value in options.items():
        setattr(config.meta, key, value)
    meta_train_and_save(config, tmp_path / "ckpt", progress=False)
    if "learned_scale" in options:  # away from its starting value, so that leaving it out would show
        model = mtl_deploy.load(tmp_path / "ckpt")
        with torch.no_grad():
            model.scale.fill_(3.0)
        mtl_deploy.save(model, tmp_path / "ckpt")
    report = mtl_deploy.export(tmp_path / "ckpt", tmp_path / "adapter", format="adapter")
    assert report.parity.passed and report.manifest["head_lr"] == options.get("head_lr")
