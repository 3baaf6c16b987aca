"""Checkpoints: exact round trip without pickle, corruption detected, atomic replacement."""

import json

import pytest
import torch

import mtl_deploy
from mtl_deploy import checkpoint
from mtl_deploy.errors import InputError, MtlDeployError


def test_round_trip_is_exact(fitted, checkpoint_dir):
    loaded = checkpoint.read(checkpoint_dir)
    x = torch.randn(9, *fitted.model.input_shape)
    with torch.no_grad():
        want, got = fitted.model.eval()(x), loaded.model(x)
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert torch.equal(loaded.sample_inputs, fitted.val.x)
    manifest = loaded.manifest
    assert manifest["library_version"] == mtl_deploy.__version__
    assert [t["name"] for t in manifest["tasks"]] == fitted.model.task_names
    assert manifest["input_shape"] == [50]
    assert len(manifest["normalization"]["mean"]) == 50
    assert len(manifest["content_hash"]) == 64


def test_weights_file_contains_no_pickle(checkpoint_dir):
    header = (checkpoint_dir / "weights.safetensors").read_bytes()[:16]
    assert not header.startswith(b"\x80")  # pickle protocol marker
    assert b"PK" not in header  # torch.save zip archive


def copy_checkpoint(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_corrupt_weights_are_detected(checkpoint_dir, tmp_path):
    broken = copy_checkpoint(checkpoint_dir, tmp_path / "broken")
    data = bytearray((broken / "weights.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (broken / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(MtlDeployError, match="corrupt: its hash does not match"):
        mtl_deploy.load(broken)


def test_missing_and_corrupt_manifest(checkpoint_dir, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        mtl_deploy.load(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no manifest.json"):
        mtl_deploy.load(empty)
    broken = copy_checkpoint(checkpoint_dir, tmp_path / "broken")
    (broken / "manifest.json").write_text("{ not json")
    with pytest.raises(MtlDeployError, match="manifest.json is corrupt"):
        mtl_deploy.load(broken)
    (broken / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputError, match="not an mtl_deploy checkpoint"):
        mtl_deploy.load(broken)


def test_failed_save_keeps_the_previous_checkpoint(fitted, tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    mtl_deploy.save(fitted.model, path, note="first")

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_file", explode)
    with pytest.raises(KeyboardInterrupt):
        mtl_deploy.save(fitted.model, path, note="second")
    assert checkpoint.read(path).manifest["info"] == {"note": "first"}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary left behind


def test_unwritable_output_is_a_failure(fitted, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="is not a directory"):
        mtl_deploy.save(fitted.model, blocker)
    with pytest.raises(MtlDeployError, match="cannot write to"):
        mtl_deploy.save(fitted.model, blocker / "inside" / "ckpt")
