"""Every sharing scheme exports to one standard ONNX graph with parity proved, MMoE gates
and cross-stitch units included, from a model and from a checkpoint."""

import onnx
import pytest
import torch

import mtl_deploy
from mtl_deploy.data import DEFAULT_TASKS
from mtl_deploy.models import build_multitask
from tests.models.test_sharing import SHARINGS


@pytest.mark.parametrize("scheme", sorted(SHARINGS))
def test_scheme_exports_with_parity(scheme, tmp_path):
    torch.manual_seed(1)
    model = build_multitask((7,), list(DEFAULT_TASKS), {"type": "mlp", "hidden": [8, 6]}, SHARINGS[scheme])
    model.set_normalization(torch.randn(7), torch.rand(7) + 0.5)
    checkpoint = mtl_deploy.save(model, tmp_path / "ckpt", sample_inputs=torch.randn(16, 7))
    report = mtl_deploy.export(checkpoint, tmp_path / "export", batch_sizes=(1, 9))
    assert report.parity.passed and report.manifest["architecture"]["architecture"] == model.architecture
    proto = onnx.load(str(tmp_path / "export" / "model.onnx"))
    assert {node.domain for node in proto.graph.node} <= {"", "ai.onnx"}
    assert [o.name for o in proto.graph.output] == [t.name for t in DEFAULT_TASKS]


def test_conv_experts_export(tmp_path):
    torch.manual_seed(2)
    model = build_multitask((1, 8, 8), list(DEFAULT_TASKS), {"type": "conv", "channels": [4]},
                            {"scheme": "mmoe", "experts": 2}).eval()
    assert mtl_deploy.export(model, tmp_path / "export", batch_sizes=(1, 5)).parity.passed
