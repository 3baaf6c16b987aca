"""Training on a GPU: the device a config names (train.device, meta.device, `--device`) is
checked like every value, a CUDA device this machine lacks is refused in one line before
anything is written, "cpu" is today's training exactly, and under torchrun each rank takes
the GPU of its LOCAL_RANK over nccl. The `gpu` tests train, save and reload on the CPU."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from typer.testing import CliRunner

import mtl_deploy
from mtl_deploy.cli import app
from mtl_deploy.config import TRAIN_FLAGS, apply_overrides, config_from_dict, overrides_from_flags, resolve_config
from mtl_deploy.data import synthetic_family
from mtl_deploy.errors import InputError
from mtl_deploy.meta.train import meta_train
from mtl_deploy.models.sharing import SCHEMES
from mtl_deploy.mtl import fit
from mtl_deploy.mtl.weighting import make_weighting
from mtl_deploy.runs import distributed
from mtl_deploy.runs.device import CPU, module_device, training_device
from mtl_deploy.runs.state import load_module, read_state, write_state

runner = CliRunner()
META = {"algorithm": "maml", "family": "sinusoid"}
DEVICE_RULE = 'device must be "cpu", "cuda", "cuda:N" or "auto"'
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def multitask_config(device: str | None = None, **train):
    config = resolve_config(preset="synthetic-related", overrides={
        "train.epochs": 2, "train.device": device, **{f"train.{k}": v for k, v in train.items()}})
    config.model.trunk = {"type": "mlp", "hidden": [16], "activation": "relu"}
    return config


def meta_config(preset: str = "sinusoid-maml", device: str | None = None, **meta):
    config = resolve_config(preset=preset, overrides={f"meta.{k}": v for k, v in {
        "iterations": 4, "val_every": 2, "val_tasks": 4, "meta_batch": 4, "checkpoint_every": 2, "device": device,
        **meta}.items()})
    if config.model.trunk["type"] == "mlp":
        config.model.trunk = {**config.model.trunk, "hidden": [16]}
    return config


def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


# -- the config key and the flag ---------------------------------------------------------


@pytest.mark.parametrize("value", ["cpu", "cuda", "cuda:0", "cuda:12", "auto"])
def test_every_device_name_parses_in_both_sections(value):
    config = config_from_dict({"train": {"device": value}})
    assert config.train.device == value
    assert config_from_dict({"meta": {**META, "device": value}}).meta.device == value


def test_the_device_defaults_to_the_cpu():
    config = config_from_dict({"meta": META})
    assert config.train.device == config.meta.device == "cpu"


@pytest.mark.parametrize("value", ["gpu", "CUDA", "cuda:", "cuda:-1", "cuda:x", "mps", "cpu ", "", 0, None])
def test_a_bad_device_name_is_refused_in_one_line(value):
    with pytest.raises(InputError, match=rf"^config: \[train\] {DEVICE_RULE}, got "):
        config_from_dict({"train": {"device": value}})
    with pytest.raises(InputError, match=rf"^config: \[meta\] {DEVICE_RULE}, got "):
        config_from_dict({"meta": {**META, "device": value}})


def test_the_device_flag_sets_the_key_of_either_kind_of_run():
    assert TRAIN_FLAGS["device"] == ("train.device", "meta.device")
    assert overrides_from_flags(device="cuda:1") == {"train.device": "cuda:1", "meta.device": "cuda:1"}
    assert overrides_from_flags(device=None) == {}
    overrides = overrides_from_flags(device="cuda")
    assert apply_overrides(config_from_dict({}), overrides).train.device == "cuda"
    assert apply_overrides(config_from_dict({"meta": META}), overrides).meta.device == "cuda"
    with pytest.raises(InputError, match=DEVICE_RULE):
        apply_overrides(config_from_dict({}), overrides_from_flags(device="gpu"))


# -- which device, on this machine -----------------------------------------------------------


def test_cpu_and_auto_without_a_gpu(monkeypatch):
    no_gpu(monkeypatch)
    assert training_device("cpu") == training_device("auto") == CPU


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_a_cuda_device_without_a_gpu_is_refused(monkeypatch, name):
    no_gpu(monkeypatch)
    with pytest.raises(InputError, match=rf"^device '{name}' needs a CUDA GPU, .* train with --device cpu"):
        training_device(name)


def test_a_gpu_that_is_not_there_is_refused(monkeypatch):
    one_gpu(monkeypatch)
    assert training_device("cuda:0") == torch.device("cuda:0")
    assert training_device("auto") == torch.device("cuda")
    with pytest.raises(InputError, match=r"'cuda:1' does not exist: this machine has 1 CUDA device\(s\), cuda:0 to"):
        training_device("cuda:1")


@pytest.mark.parametrize("name", ["tpu", "mps", "cuda:-1"])
def test_a_device_never_checked_by_its_rule_is_refused(name):
    with pytest.raises(InputError, match="unknown device"):
        training_device(name)  # a TrainConfig built in Python and passed to mtl_deploy.mtl.fit.train


@pytest.mark.parametrize("args", [["--preset", "synthetic-related"], ["--preset", "sinusoid-maml"]],
                         ids=["multitask", "meta"])
def test_train_on_cuda_without_a_gpu_says_so_in_one_line_and_writes_nothing(tmp_path, monkeypatch, args):
    no_gpu(monkeypatch)
    result = runner.invoke(app, ["train", *args, "--device", "cuda", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: device 'cuda' needs a CUDA GPU"), result.stderr
    assert "--device cpu" in lines[0] and "Traceback" not in result.output and result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_a_config_file_asking_for_a_missing_gpu_is_refused_too(tmp_path, monkeypatch):
    one_gpu(monkeypatch)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"meta": {**META, "device": "cuda:3"}}))
    result = runner.invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "'cuda:3' does not exist" in result.stderr, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


# -- torchrun: one GPU per rank over nccl, gloo on the CPU -----------------------------------------


@pytest.fixture
def two_ranks(monkeypatch):
    """A torchrun environment of two ranks whose process group is only recorded."""
    joined = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: "backend" in joined)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: joined.update(backend=backend))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed.atexit, "register", lambda function: None)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: joined.update(gpu=index))
    return joined


def test_ranks_on_the_cpu_join_over_gloo(two_ranks):
    assert distributed.from_environment(CPU) == distributed.Group(1, 2)
    assert two_ranks == {"backend": "gloo"}


def test_ranks_on_cuda_take_their_local_rank_gpu_and_join_over_nccl(two_ranks, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.from_environment(torch.device("cuda")) == distributed.Group(1, 2)
    assert two_ranks == {"backend": "nccl", "gpu": 1}


def test_ranks_without_a_gpu_each_or_with_one_named_are_refused(two_ranks, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InputError, match="process 1 of this node has no GPU of its own .* --nproc_per_node 1"):
        distributed.from_environment(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(InputError, match="the GPU of its LOCAL_RANK, not on cuda:0; use --device cuda"):
        distributed.from_environment(torch.device("cuda:0"))
    assert two_ranks == {}  # refused before joining


# -- "cpu" is today's training -----------------------------------------------------------------


def test_an_explicit_cpu_trains_exactly_as_the_default():
    data = synthetic_family(n_rows=120, seed=0)
    default, explicit = fit(data, multitask_config(), progress=False), fit(data, multitask_config("cpu"), progress=False)
    assert module_device(explicit.model) == CPU
    for key, value in default.model.state_dict().items():
        assert torch.equal(value, explicit.model.state_dict()[key]), key
    assert default.result.history == explicit.result.history
    default, explicit = meta_train(meta_config(), progress=False), meta_train(meta_config(device="cpu"), progress=False)
    for key, value in default.model.state_dict().items():
        assert torch.equal(value, explicit.model.state_dict()[key]), key
    assert default.history == explicit.history


def test_a_run_resumes_on_another_device_and_from_a_config_without_one(tmp_path, monkeypatch):
    """The device is where a run trains, not which run it is: a resume may change it, and a
    run saved before the key existed resumes with the default."""
    no_gpu(monkeypatch)
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", "--preset", "sinusoid-maml", "--iterations", "2", "--out", str(run)]
                         ).exit_code == 0
    saved = json.loads((run / "config.json").read_text())
    del saved["meta"]["device"], saved["train"]["device"]
    (run / "config.json").write_text(json.dumps(saved))
    result = runner.invoke(app, ["train", "--resume", str(run), "--iterations", "3", "--device", "auto"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["meta"]["device"] == "auto"
    assert read_state(run / "training-state.safetensors").info["step"] == 3


# -- on a GPU ----------------------------------------------------------------------------------


def finite_predictions(checkpoint, rows: torch.Tensor) -> None:
    model = mtl_deploy.load(checkpoint)
    assert module_device(model) == CPU
    with torch.no_grad():
        outputs = model(rows)
    assert outputs and all(torch.isfinite(out).all() for out in outputs.values())


def same_format(gpu_run, cpu_run, section: str) -> None:
    """The checkpoint of a GPU run is the files of a CPU run, tensor for tensor in name,
    shape and dtype, with the same manifest keys; its config records the device."""
    ours, theirs = load_file(gpu_run / "weights.safetensors"), load_file(cpu_run / "weights.safetensors")
    assert {k: (v.shape, v.dtype) for k, v in ours.items()} == {k: (v.shape, v.dtype) for k, v in theirs.items()}
    manifests = [json.loads((run / "manifest.json").read_text()) for run in (gpu_run, cpu_run)]
    assert manifests[0].keys() == manifests[1].keys() and manifests[0]["info"].keys() == manifests[1]["info"].keys()
    assert manifests[0]["info"]["config"][section]["device"] == "cuda"


@pytest.mark.gpu
@gpu
def test_a_multitask_run_trains_on_a_gpu_and_loads_on_the_cpu(tmp_path):
    fitted = mtl_deploy.train(multitask_config("cuda"), tmp_path / "gpu", progress=False)
    assert math.isfinite(fitted.result.val_loss) and module_device(fitted.model) == CPU
    mtl_deploy.train(multitask_config("cpu"), tmp_path / "cpu", progress=False)
    same_format(tmp_path / "gpu", tmp_path / "cpu", "train")
    finite_predictions(tmp_path / "gpu", fitted.val.x[:8])


@pytest.mark.gpu
@gpu
def test_a_meta_run_trains_on_a_gpu_and_loads_on_the_cpu(tmp_path):
    fitted = mtl_deploy.train(meta_config(device="cuda"), tmp_path / "gpu", progress=False)
    assert math.isfinite(fitted.val_loss) and module_device(fitted.model) == CPU
    mtl_deploy.train(meta_config(device="cpu"), tmp_path / "cpu", progress=False)
    same_format(tmp_path / "gpu", tmp_path / "cpu", "meta")
    finite_predictions(tmp_path / "gpu", torch.linspace(-5, 5, 16)[:, None])


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("aggregation,weighting", [("upgrad", "gradnorm"), ("pcgrad", "random"), ("cagrad", "dwa"),
                                                   ("none", "uncertainty")])
def test_every_kind_of_step_runs_on_a_gpu(aggregation, weighting):
    config = multitask_config("cuda", aggregation=aggregation, weighting=weighting)
    fitted = fit(synthetic_family(n_rows=120, seed=0), config, progress=False)
    assert math.isfinite(fitted.result.val_loss) and module_device(fitted.model) == CPU
    assert fitted.result.task_affinity is None or all(map(math.isfinite, sum(fitted.result.task_affinity, [])))


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_sharing_scheme_trains_on_a_gpu(scheme):
    config = multitask_config("cuda")
    config.model.sharing = {"scheme": scheme}
    fitted = fit(synthetic_family(n_rows=120, seed=0), config, progress=False)
    assert math.isfinite(fitted.result.val_loss) and module_device(fitted.model) == CPU


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("preset,algorithm", [("sinusoid-fomaml", None), ("sinusoid-metasgd", None),
                                              ("sinusoid-reptile", None), ("sinusoid-maml", "anil"),
                                              ("digits-protonet", None), ("digits-maml", None)])
def test_every_learner_meta_trains_on_a_gpu(preset, algorithm):
    overrides = {"algorithm": algorithm} if algorithm else {}
    fitted = meta_train(meta_config(preset, device="cuda", **overrides), progress=False)
    assert math.isfinite(fitted.val_loss) and module_device(fitted.model) == CPU
    assert all(torch.isfinite(v).all() for v in fitted.model.state_dict().values() if v.is_floating_point())


@pytest.mark.gpu
@gpu
def test_a_saved_gpu_state_restores_onto_the_gpu(tmp_path):
    model = torch.nn.Linear(3, 2).cuda()
    weighting = make_weighting("dwa", ["a", "b"]).cuda()
    weighting.epoch_end(torch.ones(2, device="cuda"))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(4, 3, device="cuda")).sum().backward()
    optimizer.step()
    write_state(tmp_path / "state.safetensors", modules={"model": model}, optimizer=optimizer, info={"step": 1},
                best=model.state_dict())
    assert all(t.device == CPU for t in load_file(tmp_path / "state.safetensors").values())
    state = read_state(tmp_path / "state.safetensors")
    assert state.cuda_rng is not None
    twin = torch.nn.Linear(3, 2).cuda()
    twin_optimizer = torch.optim.Adam(twin.parameters())
    state.restore({"model": twin}, twin_optimizer)
    moments = [v for entry in twin_optimizer.state.values() for k, v in entry.items() if k != "step"]
    assert moments and all(v.is_cuda for v in moments)
    assert torch.equal(twin.weight, model.weight)
    fresh = make_weighting("dwa", ["a", "b"]).cuda()
    load_module(fresh, weighting.state_dict())  # a buffer that grew is resized where it lives
    assert fresh.history.is_cuda and fresh.history.shape == (1, 2)


@pytest.mark.gpu
@gpu
def test_a_gpu_run_resumes_on_the_gpu_and_then_on_the_cpu(tmp_path):
    run = tmp_path / "run"
    args = ["train", "--preset", "synthetic-related", "--epochs", "2", "--checkpoint-every", "2"]
    assert runner.invoke(app, [*args, "--device", "cuda", "--out", str(run)]).exit_code == 0
    result = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "3"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert read_state(run / "training-state.safetensors").info["epoch"] == 5
    finite_predictions(run, torch.randn(4, 50))
