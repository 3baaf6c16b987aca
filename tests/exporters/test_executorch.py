"""ExecuTorch programs: `model.pte` for a multi-task model and `adapter.pte` for a few-shot
one, each loaded back in ExecuTorch's runtime and proved against PyTorch at several batch
sizes before it lands, re-proved by `verify`, and refused in one line where a program
cannot hold what is asked (a batch past its bound, a sequence axis, a corrupt file)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import mtl_deploy
from mtl_deploy.data import TaskSpec
from mtl_deploy.errors import InputError, MtlDeployError
from mtl_deploy.exporters import verify_export
from mtl_deploy.exporters.executorch_export import load_program
from mtl_deploy.meta.train import meta_train_and_save
from tests.meta.test_adapt_and_export import brief_config

pytest.importorskip("executorch", reason="ExecuTorch is not installed (pip install 'mtl-deploy[executorch]')")
pytestmark = pytest.mark.slow

# A new process loads the program with the manifest beside it and predicts: the runtime side
# of a device, without the model's Python classes.
RUN = """
import json, sys
import numpy as np, torch
from mtl_deploy.exporters.executorch_export import load_program
export, rows, out = sys.argv[1:]
manifest = json.load(open(f"{export}/manifest.json"))
outputs = load_program(__import__("pathlib").Path(export) / manifest["artifact"])(torch.from_numpy(np.load(rows)))
np.savez(out, **{o["name"]: v.numpy() for o, v in zip(manifest["outputs"], outputs)})
"""


@pytest.fixture(scope="module")
def program(checkpoint_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("executorch") / "export"
    return out, mtl_deploy.export(checkpoint_dir, out, format="executorch", max_batch=300)


def test_model_program_is_proved_and_reverified(program, checkpoint_dir):
    out, report = program
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.pte"]
    assert report.parity.passed and report.parity.runtimes == ["executorch (xnnpack)"]
    assert report.parity.batch_sizes == [1, 37, 256, 300] and manifest["max_batch"] == 300
    assert manifest["artifact_format"] == "executorch" and manifest["backend"] == "xnnpack"
    assert verify_export(out, checkpoint_dir).passed
    with pytest.raises(InputError, match="give the checkpoint"):
        verify_export(out)


def test_a_new_process_predicts_what_pytorch_predicts(program, checkpoint_dir, tmp_path):
    out, _ = program
    model = mtl_deploy.load(checkpoint_dir)
    rows = np.random.default_rng(3).standard_normal((5, 50)).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)
    subprocess.run([sys.executable, "-c", RUN, str(out), str(tmp_path / "rows.npy"), str(tmp_path / "out.npz")],
                   check=True, capture_output=True)
    got = np.load(tmp_path / "out.npz")
    with torch.no_grad():
        want = model(torch.from_numpy(rows))
    for task in want:
        np.testing.assert_allclose(got[task], want[task].numpy(), atol=1e-5, rtol=1e-4)


def test_a_batch_past_the_bound_is_one_line(program):
    out, _ = program
    run = load_program(out / "model.pte")
    assert len(run(torch.zeros(300, 50))) == 5
    with pytest.raises(MtlDeployError, match=r"model.pte refused the inputs \(shapes \[\(301, 50\)\].*max_batch"):
        run(torch.zeros(301, 50))


def test_a_corrupt_program_fails_its_hash_and_does_not_load(program, checkpoint_dir, tmp_path):
    out, _ = program
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "model.pte").write_bytes(b"not a program")
    with pytest.raises(MtlDeployError, match="does not match the hash"):
        verify_export(copy, checkpoint_dir)
    with pytest.raises(MtlDeployError, match="does not load as an ExecuTorch program"):
        load_program(copy / "model.pte")


@pytest.mark.parametrize("algorithm", ["protonet", "anil", "maml"])
def test_adapter_program_adapts_like_pytorch(algorithm, tmp_path):
    meta_train_and_save(brief_config(algorithm), tmp_path / "ckpt", progress=False)
    report = mtl_deploy.export(tmp_path / "ckpt", tmp_path / "pte", format="executorch")
    manifest = report.manifest
    assert (tmp_path / "pte" / "adapter.pte").is_file() and manifest["format"] == "mtl_deploy.adapter"
    assert report.parity.passed and report.parity.comparisons >= 3 and manifest["max_batch"] == 256
    assert report.parity.atol == 1e-4  # the adapter's tolerance, as for adapter.onnx
    assert verify_export(tmp_path / "pte", tmp_path / "ckpt").passed
    with pytest.raises(InputError, match="ExecuTorch's runtime"):
        mtl_deploy.runtime.FewShotAdapter(tmp_path / "pte")


def test_bad_requests_are_one_line(checkpoint_dir, tmp_path):
    with pytest.raises(InputError, match="max_batch must be an integer of at least 2"):
        mtl_deploy.export(checkpoint_dir, tmp_path / "a", format="executorch", max_batch=1)
    with pytest.raises(InputError, match=r"of the largest proof batch \(256\), got 8"):
        mtl_deploy.export(checkpoint_dir, tmp_path / "a", format="executorch", max_batch=8, batch_sizes=[1, 256])
    with pytest.raises(InputError, match="--max-batch applies to --format executorch only"):
        mtl_deploy.export(checkpoint_dir, tmp_path / "b", max_batch=8)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_sequence_inputs_are_refused_in_one_line(tmp_path):
    class Tokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(20, 4)

        def forward(self, ids):
            return self.embed(ids).mean(1)

    model = mtl_deploy.wrap(Tokens(), [TaskSpec("topic", "multiclass", 3)], example_inputs=torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(InputError, match="only varying axis is the batch.*sequence"):
        mtl_deploy.export(model, tmp_path / "seq", format="executorch")
