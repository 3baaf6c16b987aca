"""The meta-learning commands: train a preset, adapt from an .npz support set, evaluate;
bad support files get one line and exit code 2."""

import numpy as np
from typer.testing import CliRunner

from mtl_deploy.cli import app
from mtl_deploy.config import preset_names

runner = CliRunner()
META_PRESETS = ["sinusoid-maml", "sinusoid-fomaml", "sinusoid-metasgd", "sinusoid-reptile", "digits-protonet",
                "digits-matching", "digits-maml", "digits-anil", "omniglot-protonet", "omniglot-matching", "omniglot-maml",
                "omniglot-anil"]


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_every_meta_preset_ships():
    assert set(META_PRESETS) <= set(preset_names())


def test_train_adapt_evaluate(tmp_path):
    code, out = invoke("train", "--preset", "sinusoid-maml", "--iterations", "20", "--out", tmp_path / "ckpt")
    assert code == 0 and "meta-validation query loss" in out, out
    x = np.linspace(-5, 5, 10, dtype=np.float32)[:, None]
    np.savez(tmp_path / "support.npz", x=x, y=2 * np.sin(x - 0.5))
    code, out = invoke("adapt", tmp_path / "ckpt", "--support", tmp_path / "support.npz", "--out", tmp_path / "adapted")
    assert code == 0 and "adapted checkpoint" in out, out
    code, out = invoke("export", tmp_path / "adapted", "--out", tmp_path / "export")
    assert code == 0 and "pass" in out, out
    code, out = invoke("evaluate", tmp_path / "ckpt", "--episodes", "30", "--steps", "0,1", "--no-baselines")
    assert code == 0, out
    assert [line.split()[:2] for line in out.splitlines()[2:]] == [["maml", "0"], ["maml", "1"]]


def test_bad_support_files(tmp_path):
    code, _ = invoke("train", "--preset", "sinusoid-maml", "--iterations", "2", "--out", tmp_path / "ckpt")
    assert code == 0
    np.savez(tmp_path / "no_y.npz", x=np.zeros((3, 1)))
    np.savez(tmp_path / "wide.npz", x=np.zeros((3, 4)), y=np.zeros(3))
    np.savez(tmp_path / "nan.npz", x=np.full((3, 1), np.nan), y=np.zeros(3))
    cases = [("missing.npz", "does not exist"), ("no_y.npz", "no array(s) ['y']"),
             ("wide.npz", "the model takes [1]"), ("nan.npz", "NaN")]
    for name, message in cases:
        code, out = invoke("adapt", tmp_path / "ckpt", "--support", tmp_path / name, "--out", tmp_path / "a")
        assert code == 2 and out.startswith("error: ") and message in out and len(out.strip().splitlines()) == 1, out
    assert not (tmp_path / "a").exists()
    code, out = invoke("evaluate", tmp_path / "ckpt", "--steps", "one")
    assert code == 2 and "comma-separated integers" in out


def test_whole_network_algorithms_refuse_a_batch_norm_convnet(tmp_path):
    import json

    config = {"meta": {"algorithm": "maml", "family": "digits"}, "model": {"trunk": {"type": "conv"}}}
    (tmp_path / "c.json").write_text(json.dumps(config))
    code, out = invoke("train", tmp_path / "c.json", "--out", tmp_path / "o")
    assert code == 2 and 'model.trunk.norm to "none"' in out
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_evaluate_shows_progress_on_a_terminal(tmp_path, monkeypatch):
    """On a terminal, evaluate shows a bar on stderr, one tick per method; piped, none."""
    import mtl_deploy.cli

    code, out = invoke("train", "--preset", "sinusoid-maml", "--iterations", "2", "--out", tmp_path / "ckpt")
    assert code == 0, out
    piped = runner.invoke(app, ["evaluate", str(tmp_path / "ckpt"), "--episodes", "8", "--no-baselines"])
    assert piped.exit_code == 0 and "evaluate 8 episodes" not in piped.stderr
    monkeypatch.setattr(mtl_deploy.cli, "_progress", lambda: True)
    shown = runner.invoke(app, ["evaluate", str(tmp_path / "ckpt"), "--episodes", "8", "--no-baselines"])
    assert shown.exit_code == 0, shown.output
    assert "evaluate 8 episodes" in shown.stderr and "1/1" in shown.stderr
    assert shown.stdout == piped.stdout  # the table itself is the same
