"""Every run directory records its resolved config, a metrics log with losses, per-task
metrics and throughput, training curves as PNG, and TensorBoard events when installed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mtl_deploy.cli import app
from mtl_deploy.config import resolve_config
from mtl_deploy.plots import plot_curves
from tests.runs.fixtures import MAML, multitask, write_config

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def train(tmp_path, config: dict):
    path = write_config(tmp_path, config)
    result = runner.invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    return run, [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_multitask_run_records_its_config_metrics_and_curves(tmp_path):
    run, lines = train(tmp_path, multitask())
    assert json.loads((run / "config.json").read_text()) == resolve_config(tmp_path / "config.json").to_dict()
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4]
    tasks = {"price", "demand", "risk", "segment", "churn"}
    for line in lines:
        assert set(line["task_losses"]) == tasks and set(line["val_metrics"]) == tasks
        assert line["rows_per_second"] > 0 and line["val_loss"] > 0
    assert "accuracy" in lines[-1]["val_metrics"]["segment"]
    assert (run / "curves.png").read_bytes().startswith(PNG)
    assert (run / "manifest.json").is_file() and not (tmp_path / "run.partial").exists()


def test_a_meta_run_records_throughput(tmp_path):
    run, lines = train(tmp_path, MAML)
    assert [line["step"] for line in lines] == [10, 20, 30]
    assert all(line["tasks_per_second"] > 0 and line["processes"] == 1 for line in lines)
    assert (run / "curves.png").read_bytes().startswith(PNG)


def test_tensorboard_events_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    run, _ = train(tmp_path, MAML)
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_curves_need_something_to_plot(tmp_path):
    assert plot_curves([], tmp_path / "curves.png") is None
    assert not (tmp_path / "curves.png").exists()
