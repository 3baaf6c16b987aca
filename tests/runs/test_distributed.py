"""Data-parallel training under torchrun: two gloo processes on CPU end with the parameters
one process reaches on the same global batches, for MAML and for multi-task training."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from mtl_deploy.runs.distributed import Group, step_generator
from tests.runs.fixtures import (MAML, current_weights, environment, max_difference, multitask, run_train,
                                 train_command, weights, write_config)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("count", [1, 2, 5, 16, 17])
def test_shares_cover_the_batch_once(world_size, count):
    shares = [list(Group(rank, world_size).share(count)) for rank in range(world_size)]
    assert sum(shares, []) == list(range(count))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_step_generators_depend_on_seed_and_step_only():
    def draw(seed, step):
        return torch.rand(3, generator=step_generator(seed, step))

    assert torch.equal(draw(0, 1), draw(0, 1))
    draws = [draw(0, 1), draw(0, 2), draw(1, 1), draw(1, 0)]
    assert all(not torch.equal(a, b) for i, a in enumerate(draws) for b in draws[i + 1:])


def test_one_process_group_leaves_gradients_alone():
    param = torch.nn.Parameter(torch.ones(3))
    param.grad = torch.full((3,), 2.0)
    loss = torch.tensor([5.0])
    Group().sync_gradients([param], 0.5, [loss])
    assert torch.equal(param.grad, torch.full((3,), 2.0)) and float(loss) == 5.0


def two_against_one(tmp_path, config: dict):
    path = write_config(tmp_path, config)
    run_train(path, "--out", tmp_path / "one")
    run_train(path, "--out", tmp_path / "two", processes=2)
    logged = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert logged and all(line["processes"] == 2 for line in logged)
    return tmp_path / "one", tmp_path / "two"


def test_maml_on_two_processes_equals_one(tmp_path):
    one, two = two_against_one(tmp_path, MAML)  # meta-batch 5: shares of 3 and 2 tasks
    assert max_difference(current_weights(one), current_weights(two)) < 1e-5
    assert max_difference(weights(one), weights(two)) < 1e-5
    assert max_difference(current_weights(one), {k: v * 0 for k, v in current_weights(one).items()}) > 0


@pytest.mark.parametrize("aggregation,weighting", [("none", "equal"), ("upgrad", "gradnorm")])
def test_multitask_on_two_processes_equals_one(tmp_path, aggregation, weighting):
    one, two = two_against_one(tmp_path, multitask(aggregation, weighting))  # 162 rows: a last batch of 2
    assert max_difference(current_weights(one), current_weights(two)) < 1e-5
    assert max_difference(weights(one), weights(two)) < 1e-5


def test_a_meta_batch_smaller_than_the_processes_is_refused(tmp_path):
    config = {**MAML, "meta": {**MAML["meta"], "meta_batch": 1}}
    path = write_config(tmp_path, config)
    result = subprocess.run(train_command(path, "--out", tmp_path / "run", processes=2), capture_output=True,
                            text=True, env=environment(), timeout=300)
    assert result.returncode != 0
    assert "cannot be split across 2 processes" in result.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()
