"""Resumable runs: a run killed with SIGKILL at a random moment and resumed ends exactly where
an uninterrupted run ends; the saved state survives a kill mid-write; bad resumes are refused
with one line."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time

import pytest
import torch
from typer.testing import CliRunner

from mtl_deploy.cli import app
from mtl_deploy.errors import InputError, MtlDeployError
from mtl_deploy.runs.state import read_state, write_state
from tests.runs.fixtures import (MAML, current_weights, environment, max_difference, multitask, run_train,
                                 train_command, weights, write_config)

runner = CliRunner()


def kill_mid_run(command: list[str], partial, rng: random.Random, last_step: int) -> int:
    """Start `command`, wait until it has saved a state past a random step, then SIGKILL it
    at once, mid-step; returns the step of the state it left. Retries (another random
    step) the rare time the run finishes first."""
    for _ in range(5):
        target = rng.randint(1, last_step // 2)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment())
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if read_state(partial / "training-state.safetensors").info["step"] >= target:
                    break
            except (InputError, MtlDeployError):  # not written yet
                pass
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        if process.wait() == -signal.SIGKILL and partial.is_dir():
            return read_state(partial / "training-state.safetensors").info["step"]
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(partial.with_name(partial.name.removesuffix(".partial")), ignore_errors=True)
    raise AssertionError("the run finished before it could be killed, five times")


@pytest.mark.parametrize("config", [MAML, multitask("pcgrad", "random")], ids=["maml", "multitask"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, config):
    config = json.loads(json.dumps(config))
    section = "meta" if "meta" in config else "train"
    config[section].update({"iterations": 300, "val_every": 25} if section == "meta" else {"epochs": 12})
    path = write_config(tmp_path, config)
    run_train(path, "--out", tmp_path / "whole")
    killed = tmp_path / "killed"
    last_step = read_state(tmp_path / "whole" / "training-state.safetensors").info["step"]
    step = kill_mid_run(train_command(path, "--out", killed), tmp_path / "killed.partial", random.Random(), last_step)
    assert 0 < step < last_step and not killed.exists()
    run_train("--resume", killed)
    assert max_difference(current_weights(tmp_path / "whole"), current_weights(killed)) == 0.0
    assert max_difference(weights(tmp_path / "whole"), weights(killed)) == 0.0
    logged = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    whole = [json.loads(line)["step"] for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert logged == whole  # no step logged twice or lost


def test_a_finished_run_resumes_to_train_longer(tmp_path):
    path = write_config(tmp_path, MAML)
    run_train(path, "--out", tmp_path / "long", "--iterations", 20)
    run_train("--resume", tmp_path / "long", "--iterations", 30)
    run_train(path, "--out", tmp_path / "whole")
    assert max_difference(current_weights(tmp_path / "long"), current_weights(tmp_path / "whole")) == 0.0


def test_a_kill_while_writing_leaves_the_last_state_readable(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    path = tmp_path / "state.safetensors"
    write_state(path, modules={"model": model}, optimizer=optimizer, info={"step": 1})

    def killed(*args):
        raise KeyboardInterrupt  # the process dies between writing the new file and renaming it

    monkeypatch.setattr(os, "replace", killed)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        write_state(path, modules={"model": model}, optimizer=optimizer, info={"step": 2})
    monkeypatch.undo()
    state = read_state(path)
    assert state.info["step"] == 1
    assert not torch.equal(state.modules["model"]["weight"], model.weight)


def test_a_corrupt_state_is_refused(tmp_path):
    path = tmp_path / "state.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(MtlDeployError, match="corrupt"):
        read_state(path)


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output.strip().splitlines()


def test_bad_resumes_get_one_line(tmp_path):
    code, lines = invoke("train", "--resume", tmp_path / "nothing")
    assert code == 2 and len(lines) == 1 and "no resumable run" in lines[0]
    path = write_config(tmp_path, MAML)
    assert invoke("train", path, "--out", tmp_path / "run", "--iterations", 3)[0] == 0
    other = write_config(tmp_path, {**MAML, "meta": {**MAML["meta"], "inner_lr": 0.5}}, "other.json")
    code, lines = invoke("train", other, "--resume", tmp_path / "run")
    assert code == 2 and len(lines) == 1 and "meta.inner_lr" in lines[0]
    (tmp_path / "run.partial").mkdir()
    code, lines = invoke("train", path, "--out", tmp_path / "run")
    assert code == 2 and len(lines) == 1 and "--resume" in lines[0]


def test_a_failed_start_leaves_nothing(tmp_path):
    config = {**MAML, "meta": {**MAML["meta"], "family": "npz", "path": str(tmp_path / "missing.npz")}}
    code, lines = invoke("train", write_config(tmp_path, config), "--out", tmp_path / "run")
    assert code == 2 and len(lines) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
