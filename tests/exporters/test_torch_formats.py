"""torch.export, AOTInductor and TorchScript artifacts: each reloads from disk and matches
the model, with a manifest like the ONNX export's."""

import json

import numpy as np
import pytest
import torch

import mtl_deploy
from mtl_deploy.inspection import describe
from mtl_deploy.errors import InputError
from mtl_deploy.exporters import verify_export
from mtl_deploy.runtime import Predictor


@pytest.mark.parametrize("format, artifact", [("pt2", "model.pt2"), ("torchscript", "model.pt"),
                                              ("aoti", "model.aoti.pt2")])
def test_artifact_reloads_and_matches(checkpoint_dir, tmp_path, format, artifact):
    report = mtl_deploy.export(checkpoint_dir, tmp_path / format, format=format, batch_sizes=(1, 37))
    assert report.parity.passed and report.parity.inputs == ["random", "real"]
    manifest = json.loads((tmp_path / format / "manifest.json").read_text())
    assert manifest["artifact"] == artifact and manifest["artifact_format"] == format
    assert [o["name"] for o in manifest["outputs"]] == list(manifest["tasks"])
    model = mtl_deploy.load(checkpoint_dir)
    x = torch.randn(5, 50)
    if format == "pt2":
        loaded = torch.export.load(str(tmp_path / format / artifact)).module()
    elif format == "aoti":
        loaded = torch._inductor.aoti_load_package(str(tmp_path / format / artifact))
    else:
        loaded = torch.jit.load(str(tmp_path / format / artifact))
    with torch.no_grad():
        want, got = model(x), loaded(x)
    for name, value in zip(manifest["tasks"], got):
        np.testing.assert_allclose(value.numpy(), want[name].numpy(), atol=1e-5, rtol=1e-4)
    # every later command reads it back, or refuses it in one line naming what handles it
    assert verify_export(tmp_path / format, checkpoint_dir).passed
    with pytest.raises(InputError, match="give the checkpoint"):
        verify_export(tmp_path / format)
    assert f"{format} export" in describe(tmp_path / format)
    with pytest.raises(InputError, match="this runtime serves ONNX exports"):
        Predictor(tmp_path / format)


def test_routed_is_onnx_only(checkpoint_dir, tmp_path):
    with pytest.raises(InputError, match="--routed applies to --format onnx or triton only"):
        mtl_deploy.export(checkpoint_dir, tmp_path / "x", format="pt2", routed=True)
