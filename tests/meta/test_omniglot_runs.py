"""The one-shot protocol of Lake et al. (2015): the MHD baseline against the authors'
figure, `evaluate --omniglot-runs` end to end on a briefly trained checkpoint, and the runs
it refuses (no class_labels.txt, drawings of another size)."""

import io
import json
import zipfile

import pytest
from PIL import Image
from typer.testing import CliRunner

from mtl_deploy.meta.omniglot_runs import evaluate_omniglot_runs, mhd_error, read_runs
from mtl_deploy.tables import omniglot_runs_table
from mtl_deploy.cli import app
from tests.omniglot_data import OMNIGLOT, needs_omniglot

pytestmark = needs_omniglot
RUNS = OMNIGLOT / "all_runs.zip"


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("omniglot") / "protonet"
    code, output = invoke("train", "--preset", "omniglot-protonet", "--data", OMNIGLOT, "--iterations", "3",
                          "--out", out)
    assert code == 0, output
    return out


def unpack_run(tmp_path, run="run01", drop=(), resize=None):
    """One run unpacked to tmp_path/runs/, without the files in `drop`, `resize` one image."""
    with zipfile.ZipFile(RUNS) as archive:
        for name in archive.namelist():
            if name.startswith(f"{run}/") and not name.endswith("/") and name[len(run) + 1:] not in drop:
                data = archive.read(name)
                if name == resize:
                    buffer = io.BytesIO()
                    Image.open(io.BytesIO(data)).resize((64, 64)).save(buffer, format="PNG")
                    data = buffer.getvalue()
                target = tmp_path / "runs" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
    return tmp_path / "runs"


def test_runs_pair_each_test_drawing_with_its_class():
    runs = read_runs(RUNS)
    assert [r.name for r in runs] == [f"run{i:02d}" for i in range(1, 21)]
    assert all(len(r.training) == len(r.test) == 20 and sorted(r.answers) == list(range(20)) for r in runs)
    assert runs[0].answers[:3] == [7, 8, 1]  # run01: item01 -> class08, item02 -> class09, item03 -> class02


@pytest.mark.slow
def test_modified_hausdorff_gives_the_authors_error():
    errors = [mhd_error(run) for run in read_runs(RUNS)]
    assert abs(sum(errors) / len(errors) - 38.75) <= 0.5  # the authors quote 38.8%


def test_the_adapter_export_scores_the_runs_as_pytorch_does(checkpoint, tmp_path):
    import mtl_deploy

    mtl_deploy.export(checkpoint, tmp_path / "adapter", format="adapter")
    result = evaluate_omniglot_runs(checkpoint, RUNS, baselines=False, adapter=tmp_path / "adapter")
    assert result.errors["adapter (onnxruntime)"] == result.errors["protonet"]
    assert result.adapter_max_abs_diff is not None and result.adapter_max_abs_diff <= 1e-3
    code, out = invoke("evaluate", checkpoint, "--omniglot-runs", RUNS, "--no-baselines", "--adapter", tmp_path / "adapter")
    assert code == 0 and "adapter export vs PyTorch: largest logit difference" in out, out
    other = tmp_path / "other"
    invoke("train", "--preset", "omniglot-protonet", "--data", OMNIGLOT, "--iterations", "2", "--seed", "5",
           "--out", other)
    code, out = invoke("evaluate", other, "--omniglot-runs", RUNS, "--no-baselines", "--adapter", tmp_path / "adapter")
    assert code == 2 and "made from other weights" in out, out


def test_evaluate_omniglot_runs_end_to_end(checkpoint, tmp_path):
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    assert manifest["info"]["input_transform"]["size"] == 28 and manifest["info"]["input_transform"]["ink"] == 1.0
    code, out = invoke("evaluate", checkpoint, "--omniglot-runs", RUNS, "--no-baselines")
    assert code == 0, out
    lines = out.strip().splitlines()
    assert lines[1].split() == ["run", "protonet"] and len(lines) == 3 + 20 + 1
    assert lines[-1].startswith("mean ± 95% CI")
    one = unpack_run(tmp_path)
    result = evaluate_omniglot_runs(checkpoint, one)
    assert result.runs == ["run01"] and set(result.errors) == {"protonet", "mhd", "pixels"}
    assert result.errors["mhd"] == [mhd_error(read_runs(RUNS)[0])]
    assert 0.0 <= result.errors["protonet"][0] <= 100.0


def test_bad_runs_get_one_line(checkpoint, tmp_path):
    cases = [(unpack_run(tmp_path / "a", drop=("class_labels.txt",)), "has no class_labels.txt"),
             (unpack_run(tmp_path / "b", resize="run01/test/item03.png"), "item03.png is 64x64 pixels"),
             (tmp_path / "missing.zip", "do not exist")]
    for path, message in cases:
        code, out = invoke("evaluate", checkpoint, "--omniglot-runs", path, "--no-baselines")
        assert code == 2 and out.startswith("error: ") and message in out, out
        assert len(out.strip().splitlines()) == 1, out


@pytest.mark.parametrize("preset", ["omniglot-anil", "omniglot-maml"])
def test_gradient_learners_adapt_on_each_run(preset, tmp_path):
    """MAML and ANIL take their adaptation steps on a run's 20 training drawings."""
    from mtl_deploy.config import resolve_config
    from mtl_deploy.meta.train import meta_train

    config = resolve_config(preset=preset, overrides={"meta.path": str(OMNIGLOT), "meta.iterations": 2,
                                                      "meta.val_tasks": 4})
    model = meta_train(config, progress=False).model
    result = evaluate_omniglot_runs(model, unpack_run(tmp_path), baselines=False)
    assert list(result.errors) == [config.meta.algorithm] and 0.0 <= result.errors[config.meta.algorithm][0] <= 100.0



@needs_omniglot
def test_learned_baselines_on_the_runs_pair_with_the_model(tmp_path):
    """Given the family it was meta-trained on, the runs also score the pretrained and
    from-scratch networks, run by run, so the model's margin over each is paired."""
    from mtl_deploy.config import resolve_config
    from mtl_deploy.meta.train import meta_train

    config = resolve_config(preset="omniglot-protonet", overrides={"meta.path": str(OMNIGLOT), "meta.iterations": 2,
                                                                   "meta.val_tasks": 4})
    fitted = meta_train(config, progress=False)
    runs = unpack_run(tmp_path)
    result = evaluate_omniglot_runs(fitted.model, runs, family=fitted.family, meta=config.meta, pretrain_iterations=3)
    assert set(result.errors) == {"protonet", "mhd", "pixels", "pretrained", "scratch"}
    assert all(len(v) == 1 and 0.0 <= v[0] <= 100.0 for v in result.errors.values())
    saved, _ = result.paired("protonet", "scratch")
    assert saved == result.errors["scratch"][0] - result.errors["protonet"][0]
    assert "pretrained" in omniglot_runs_table(result) and "scratch - protonet" in omniglot_runs_table(result)
