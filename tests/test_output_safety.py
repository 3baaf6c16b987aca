"""Nothing of the user's is ever destroyed, and nothing unproved is vouched for:
`--out` rules, an honest `verify`, one owner per run directory, and a directory
replacement that survives a kill between its two steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import mtl_deploy
from mtl_deploy.atomic import OutputLock, atomic_directory, check_output, sha256_file
from mtl_deploy.cli import app
from mtl_deploy.errors import InputError
from mtl_deploy.exporters import verify_export
from mtl_deploy.exporters.verify import ParityError

ROOT = Path(__file__).resolve().parents[1]


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under `roots` (hidden ones too) with its hash: what "nothing changed" means."""
    files = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if path.is_file():
                files[str(path)] = sha256_file(path)
    return files


def run_cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def user_project(tmp_path) -> Path:
    project = tmp_path / "myproject"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('mine')\n")
    (project / "notes.txt").write_text("do not lose\n")
    return project


# 1. --out destroys nothing

@pytest.mark.parametrize("command", ["export", "adapt-like", "analyze", "train"])
def test_out_holding_user_files_is_refused_and_untouched(command, checkpoint_dir, user_project, tmp_path):
    before = snapshot(user_project, checkpoint_dir)
    if command == "export":
        result = run_cli("export", checkpoint_dir, "--out", user_project)
    elif command == "analyze":
        result = run_cli("analyze", checkpoint_dir, "--preset", "synthetic-related", "--out", user_project)
    elif command == "train":
        result = run_cli("train", "--preset", "synthetic-related", "--epochs", "1", "--out", user_project)
    else:  # the library call adapt uses to write its checkpoint
        with pytest.raises(InputError, match="not an mtl_deploy checkpoint"):
            mtl_deploy.save(mtl_deploy.load(checkpoint_dir), user_project)
        result = None
    if result is not None:
        assert result.exit_code == 2, result.output
        assert "holds files that are not an mtl_deploy" in result.output
    assert snapshot(user_project, checkpoint_dir) == before
    assert sorted(p.name for p in user_project.parent.iterdir()) == ["myproject"]  # no lock, no staging left


@pytest.mark.parametrize("where", ["same", "parent", "inside"])
def test_out_related_to_the_input_is_refused_even_for_our_own_artifacts(where, checkpoint_dir):
    out = {"same": checkpoint_dir, "parent": checkpoint_dir.parent, "inside": checkpoint_dir / "export"}[where]
    before = snapshot(checkpoint_dir.parent)
    for args in (["export", checkpoint_dir, "--out", out],
                 ["adapt", checkpoint_dir, "--support", checkpoint_dir / "none.npz", "--out", out]):
        result = run_cli(*args)
        assert result.exit_code == 2, result.output
        assert "the input" in result.output and "Traceback" not in result.output
    assert snapshot(checkpoint_dir.parent) == before


def test_out_that_is_ours_and_of_the_same_kind_is_replaced(checkpoint_dir, tmp_path):
    out = tmp_path / "export"
    mtl_deploy.export(checkpoint_dir, out)
    first = json.loads((out / "manifest.json").read_text())
    mtl_deploy.export(checkpoint_dir, out, opset=19)
    assert json.loads((out / "manifest.json").read_text())["opset"] == 19 != first["opset"]
    with pytest.raises(InputError, match="not an mtl_deploy checkpoint"):  # an export is no checkpoint
        check_output(out, "checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


# 2. verify vouches only for what it proves

def test_verify_reproves_with_its_own_tolerances_not_the_manifests(checkpoint_dir, export_dir, tmp_path):
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    proto = onnx.load(str(export_dir / "model.onnx"))
    for init in proto.graph.initializer:  # shift every weight: outputs move by far more than atol
        if init.data_type == onnx.TensorProto.FLOAT:
            array = onnx.numpy_helper.to_array(init) + 3.0
            init.CopyFrom(onnx.numpy_helper.from_array(array, init.name))
    onnx.save_model(proto, str(tampered / "model.onnx"))
    manifest = json.loads((export_dir / "manifest.json").read_text())
    manifest["model_sha256"] = sha256_file(tampered / "model.onnx")  # re-hashed: the hash cannot tell
    for edit in ({"atol": 1e9, "rtol": 1e9}, {"batch_sizes": []}):
        manifest["parity"].update(edit)
        (tampered / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ParityError, match="parity failed"):
            verify_export(tampered, checkpoint_dir)
        result = run_cli("verify", tampered, "--checkpoint", checkpoint_dir)
        assert result.exit_code == 1 and "verified" not in result.output


def test_an_empty_proof_is_an_error(checkpoint_dir, tmp_path):
    for sizes in ([], [0], [-1]):
        with pytest.raises(InputError, match="batch_sizes"):
            mtl_deploy.export(checkpoint_dir, tmp_path / "export", batch_sizes=sizes)
    assert not (tmp_path / "export").exists()


def test_manifests_say_hashes_detect_corruption_not_tampering(checkpoint_dir, export_dir):
    for directory in (checkpoint_dir, export_dir):
        assert "not tampering" in json.loads((directory / "manifest.json").read_text())["integrity"]


# 3. one process owns a run directory

TRAIN_SLOWLY = [sys.executable, "-m", "mtl_deploy", "train", "--preset", "sinusoid-maml", "--iterations", "400000",
                "--checkpoint-every", "50"]


def _wait_for(path: Path, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_refused_second_run_touches_nothing_and_the_first_goes_on(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([*TRAIN_SLOWLY, "--out", str(out)], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(out.with_name("run.partial") / "training-state.safetensors")
        before = snapshot(tmp_path)
        for args in (["train", "--preset", "sinusoid-maml", "--out", str(out)], ["train", "--resume", str(out)]):
            second = subprocess.run([sys.executable, "-m", "mtl_deploy", *args], cwd=tmp_path, capture_output=True,
                                    text=True, timeout=120)
            assert second.returncode == 2, second.stderr
            assert "another mtl-deploy process" in second.stderr and "Traceback" not in second.stderr
        time.sleep(1.0)
        assert first.poll() is None, first.stderr.read() if first.stderr else ""  # the first run is alive
        assert set(before) <= set(snapshot(tmp_path))  # it keeps writing; nothing of it was removed
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=60)
    assert (out.with_name("run.partial") / "training-state.safetensors").is_file()  # resumable after Ctrl-C


def test_the_lock_is_released_when_its_owner_dies(tmp_path):
    out = tmp_path / "artifact"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time; from mtl_deploy.atomic import OutputLock
        lock = OutputLock({str(out)!r}); lock.acquire(); print("held", flush=True); time.sleep(600)""")],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(InputError, match=rf"pid {holder.pid}"):
        OutputLock(out).acquire()
    holder.kill()
    holder.wait()
    with OutputLock(out):
        pass
    assert not list(tmp_path.iterdir())  # the lock file goes with its last owner


# a kill between the two steps of a directory replacement

KILL_BETWEEN_STEPS = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from mtl_deploy import atomic
    if sys.argv[2] == "two-renames":
        atomic._exchange = lambda a, b: False  # where RENAME_EXCHANGE is not supported
        real_replace, calls = os.replace, []
        def replace_then_die(a, b):
            real_replace(a, b)
            calls.append(b)
            if len(calls) == 1:  # the old copy is retired; the new one is not in place yet
                os.kill(os.getpid(), signal.SIGKILL)
        atomic.os.replace = replace_then_die
    else:
        atomic.shutil.rmtree = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # swapped, old copy not removed
    with atomic.atomic_directory(sys.argv[1], "export") as staging:
        (staging / "manifest.json").write_text('{"format": "mtl_deploy.export", "version": "new"}')
""")


@pytest.mark.parametrize("mode", ["two-renames", "exchange"])
def test_a_kill_between_the_steps_of_a_replacement_leaves_a_valid_artifact(mode, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "manifest.json").write_text('{"format": "mtl_deploy.export", "version": "old"}')
    killed = subprocess.run([sys.executable, "-c", KILL_BETWEEN_STEPS, str(out), mode], cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".export."))  # leftovers of the kill
    with atomic_directory(out, "export") as staging:  # the next run recovers, then carries on
        version = json.loads((out / "manifest.json").read_text())["version"]
        assert version == ("old" if mode == "two-renames" else "new")
        leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".export.") and p != staging
                     and not p.name.endswith(".lock")]
        assert leftovers == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


# every artifact is readable as any file of the user's is (the umask decides)

def _modes(root: Path) -> set[tuple[str, int]]:
    return {("dir" if p.is_dir() else "file", p.stat().st_mode & 0o777) for p in [root, *root.rglob("*")]}


@pytest.fixture
def umask_027():
    old = os.umask(0o027)  # an unusual mask, so that a mode that ignores it shows
    yield
    os.umask(old)


@pytest.mark.parametrize("format", ["onnx", "int8", "triton", "pt2", "torchscript",
                                    pytest.param("aoti", marks=pytest.mark.slow), "adapter"])
def test_every_export_format_gets_the_users_permissions(format, checkpoint_dir, tmp_path, umask_027):
    out = tmp_path / "out"
    if format == "adapter":
        from mtl_deploy.meta.train import meta_train_and_save
        from tests.meta.test_adapt_and_export import brief_config

        source = tmp_path / "meta"
        meta_train_and_save(brief_config("protonet"), source, progress=False)
        mtl_deploy.export(source, out, format="adapter")
    else:
        mtl_deploy.export(checkpoint_dir, out, format="onnx" if format == "int8" else format,
                          quantize="int8" if format == "int8" else None)
    assert _modes(out) == {("dir", 0o750), ("file", 0o640)}


def test_checkpoints_runs_relations_and_predictions_get_the_users_permissions(checkpoint_dir, export_dir, tmp_path,
                                                                              umask_027):
    from mtl_deploy.config import resolve_config
    from mtl_deploy.mtl import analyze
    from mtl_deploy.runtime import predict_file

    mtl_deploy.save(mtl_deploy.load(checkpoint_dir), tmp_path / "checkpoint")
    config = resolve_config(preset="synthetic-related", overrides={"train.epochs": 1})
    mtl_deploy.train(config, tmp_path / "run", progress=False)
    analyze(checkpoint_dir, config.data, tmp_path / "relations")
    rows = tmp_path / "rows.npy"
    np.save(rows, np.zeros((3, *mtl_deploy.load(checkpoint_dir).input_shape), dtype=np.float32))
    predict_file(export_dir, rows, output_path=tmp_path / "predictions.csv")
    for name in ("checkpoint", "run", "relations"):
        assert _modes(tmp_path / name) == {("dir", 0o750), ("file", 0o640)}, name
    assert (tmp_path / "predictions.csv").stat().st_mode & 0o777 == 0o640
