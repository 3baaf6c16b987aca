"""The files the bad-input table runs against, built once: real artifacts of every kind
(a trained checkpoint and its exports in each format, meta-learned checkpoints and their
adapter exports), a user's own directory, and input files that are each wrong in one way.

`build_workspace(root)` returns `{name: path}`; the table refers to paths as `{name}`.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import onnx
import torch
from safetensors.torch import load_file, save_file

import mtl_deploy
from mtl_deploy.atomic import sha256_file
from mtl_deploy.config import resolve_config
from mtl_deploy.data import TaskSpec
from mtl_deploy.models import MultiTaskModel

FEATURES = 50  # the synthetic family's row width
BRIEF = (1, 7)  # batch sizes of the fixtures' parity proofs


def _meta_config(preset: str, **meta):
    config = resolve_config(preset=preset, overrides={f"meta.{k}": v for k, v in {
        "iterations": 3, "val_every": 3, "val_tasks": 4, "meta_batch": 4, "checkpoint_every": 3, **meta}.items()})
    config.model.trunk = {"type": "mlp", "hidden": [16], "activation": "relu"}
    return config


def _multitask_run(out: Path, seed: int) -> None:
    config = resolve_config(preset="synthetic-related", overrides={"train.epochs": 2, "train.seed": seed})
    config.data.synthetic = {**config.data.synthetic, "seed": seed}
    mtl_deploy.train(config, out, progress=False)


def _rewrite_manifest(directory: Path, **changes) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            manifest[section][field] = value
        else:
            manifest[key] = value
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _tamper_onnx(directory: Path) -> None:
    """Shift the largest weight of model.onnx and re-hash it, as an attacker would."""
    proto = onnx.load(directory / "model.onnx")
    weight = max(proto.graph.initializer, key=lambda t: np.prod(t.dims))
    values = onnx.numpy_helper.to_array(weight) + 1.0
    weight.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), weight.name))
    onnx.save_model(proto, directory / "model.onnx")
    _rewrite_manifest(directory, model_sha256=sha256_file(directory / "model.onnx"))


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


def _checkpoint_with_weights(source: Path, target: Path, edit) -> Path:
    """A copy of a checkpoint whose weights `edit` changed, with the hashes made to match."""
    _copy(source, target)
    state = load_file(target / "weights.safetensors")
    edit(state)
    save_file(state, target / "weights.safetensors")
    digest = sha256_file(target / "weights.safetensors")
    files = json.loads((target / "manifest.json").read_text())["files"]
    _rewrite_manifest(target, content_hash=digest, files={**files, "weights.safetensors": digest})
    return target


def _poison(state: dict) -> None:
    name = next(k for k in state if k.endswith("weight"))
    state[name][0, 0] = float("nan")


def _write_csv(path: Path, header: list[str] | None, rows, bom: bool = False) -> Path:
    lines = ([",".join(header)] if header is not None else []) + [",".join(map(str, r)) for r in rows]
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def _write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def _configs(root: Path, p: dict) -> None:
    """Run configs each wrong in one value (the rest is a small valid run)."""
    root.mkdir()
    base = {"data": {"source": "synthetic", "synthetic": {"n_rows": 60}},
            "model": {"trunk": {"type": "mlp", "hidden": [8], "activation": "relu"}},
            "train": {"epochs": 1}}
    meta = {"meta": {"family": "sinusoid", "iterations": 2, "val_every": 2, "val_tasks": 2, "meta_batch": 2},
            "model": {"trunk": {"type": "mlp", "hidden": [8], "activation": "relu"}}}
    bad = {
        "epochs_negative": ("train", "epochs", -3), "epochs_string": ("train", "epochs", "ten"),
        "epochs_float": ("train", "epochs", 2.5), "batch_size_zero": ("train", "batch_size", 0),
        "lr_nan": ("train", "lr", float("nan")), "lr_negative": ("train", "lr", -0.1),
        "lr_string": ("train", "lr", "fast"), "weight_decay_negative": ("train", "weight_decay", -1.0),
        "patience_negative": ("train", "patience", -1), "checkpoint_every_zero": ("train", "checkpoint_every", 0),
        "seed_string": ("train", "seed", "x"), "weighting_unknown": ("train", "weighting", "psychic"),
        "aggregation_unknown": ("train", "aggregation", "vote"), "device_unknown": ("train", "device", "gpu"),
        "val_fraction_high": ("data", "val_fraction", 1.5), "source_unknown": ("data", "source", "parquet"),
        "trunk_hidden_negative": ("model", "trunk", {"type": "mlp", "hidden": [-4], "activation": "relu"}),
        "trunk_hidden_string": ("model", "trunk", {"type": "mlp", "hidden": "wide", "activation": "relu"}),
        "trunk_activation_unknown": ("model", "trunk", {"type": "mlp", "hidden": [8], "activation": "swish2"}),
        "trunk_dropout_high": ("model", "trunk", {"type": "mlp", "hidden": [8], "activation": "relu", "dropout": 1.5}),
        "trunk_type_unknown": ("model", "trunk", {"type": "transformer9"}),
        "sharing_unknown": ("model", "sharing", {"scheme": "telepathy"}),
        "task_kind_unknown": ("data", "tasks", [{"name": "price", "kind": "ordinal"}]),
        "task_out_dim_zero": ("data", "tasks", [{"name": "price", "kind": "regression", "out_dim": 0}]),
    }
    for name, (section, key, value) in bad.items():
        config = json.loads(json.dumps(base))
        config[section][key] = value
        p[f"cfg_{name}"] = root / f"{name}.json"
        p[f"cfg_{name}"].write_text(json.dumps(config))  # json writes NaN as the literal NaN
    bad_meta = {"shots_zero": ("shots", 0), "inner_lr_nan": ("inner_lr", float("nan")),
                "iterations_negative": ("iterations", -3), "algorithm_unknown": ("algorithm", "sorcery"),
                "ways_string": ("ways", "five"), "outer_lr_inf": ("outer_lr", float("inf")),
                "device_unknown": ("device", "tpu")}
    for name, (key, value) in bad_meta.items():
        config = json.loads(json.dumps(meta))
        config["meta"][key] = value
        p[f"cfg_meta_{name}"] = root / f"meta_{name}.json"
        p[f"cfg_meta_{name}"].write_text(json.dumps(config))
    p["cfg_good"] = _write_json(root / "good.json", base)
    p["cfg_list"] = _write_json(root / "list.json", [1, 2])
    p["cfg_section_unknown"] = _write_json(root / "section.json", {"trian": {"epochs": 1}})
    p["cfg_broken"] = root / "broken.json"
    p["cfg_broken"].write_text("{ nope")


def _data_files(root: Path, p: dict) -> None:
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((9, FEATURES)).astype(np.float32)
    names = [f"f{i}" for i in range(FEATURES)]
    p["rows_npy"] = root / "rows.npy"
    np.save(p["rows_npy"], rows)
    p["rows_csv"] = _write_csv(root / "rows.csv", names, rows.tolist())
    p["rows6_npy"] = root / "rows6.npy"  # rows for the routed model, which takes 6 features
    np.save(p["rows6_npy"], rows[:, :6])
    np.save(root / "rows_nan.npy", np.where(np.arange(FEATURES) == 3, np.nan, rows).astype(np.float32))
    np.save(root / "rows_inf.npy", np.where(np.arange(FEATURES) == 3, np.inf, rows).astype(np.float32))
    np.save(root / "rows_strings.npy", rows.astype(str))
    np.save(root / "rows_3d.npy", rows.reshape(9, 5, 10))
    np.save(root / "rows_empty.npy", np.zeros((0, FEATURES), np.float32))
    np.save(root / "rows_wide.npy", rng.standard_normal((4, FEATURES + 3)).astype(np.float32))
    np.save(root / "rows_objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    for name in ("rows_nan", "rows_inf", "rows_strings", "rows_3d", "rows_empty", "rows_wide", "rows_objects"):
        p[name] = root / f"{name}.npy"
    p["rows_txt"] = root / "rows.txt"
    p["rows_txt"].write_text("1 2 3\n")
    p["garbage_npy"] = root / "garbage.npy"
    p["garbage_npy"].write_bytes(b"\x93NUMPY garbage that is not an array")
    p["empty_csv"] = root / "empty.csv"
    p["empty_csv"].write_text("")
    p["header_only_csv"] = _write_csv(root / "header_only.csv", names, [])
    p["text_cell_csv"] = _write_csv(root / "text_cell.csv", names, [["abc", *rows[0, 1:].tolist()]])
    p["ragged_csv"] = _write_csv(root / "ragged.csv", None, [rows[0].tolist(), rows[1, :10].tolist()])
    p["nan_csv"] = _write_csv(root / "nan.csv", names, [["nan", *rows[0, 1:].tolist()]])
    p["narrow_csv"] = _write_csv(root / "narrow.csv", names[:7], rows[:, :7].tolist())
    p["duplicate_csv"] = _write_csv(root / "duplicate.csv", [*names[:-1], names[0]], rows.tolist())
    p["huge_field_csv"] = _write_csv(root / "huge_field.csv", names, [["1" * 200_000, *rows[0, 1:].tolist()]])
    # data for training from a CSV: feature columns a, b, a task column price
    table = rng.standard_normal((12, 3)).round(4).tolist()
    p["train_duplicate_csv"] = _write_csv(root / "train_duplicate.csv", ["a", "a", "price"], table)
    p["train_header_only_csv"] = _write_csv(root / "train_header_only.csv", ["a", "b", "price"], [])
    p["train_huge_field_csv"] = _write_csv(root / "train_huge_field.csv", ["a", "b", "price"],
                                           [["1" * 200_000, 1, 2], *table])
    p["train_numeric_header_csv"] = _write_csv(root / "train_numeric_header.csv", ["1", "2", "3"], table)
    p["train_good_csv"] = _write_csv(root / "train_good.csv", ["a", "b", "price"], table)
    for name in ("train_good_csv", "train_duplicate_csv", "train_header_only_csv", "train_huge_field_csv",
                 "train_numeric_header_csv"):
        p[f"cfg_{name}"] = _write_json(root / f"{name}.json", {
            "data": {"source": "csv", "path": str(p[name]), "tasks": [{"name": "price", "kind": "regression"}]},
            "model": {"trunk": {"type": "mlp", "hidden": [4], "activation": "relu"}}, "train": {"epochs": 1}})
    tasks = ["price", "demand", "risk", "segment", "churn"]  # the synthetic family's task columns
    labelled = np.hstack([rows, rng.standard_normal((9, 3)), rng.integers(0, 4, (9, 1)), rng.integers(0, 2, (9, 1))])
    p["analyze_duplicate_csv"] = _write_csv(root / "analyze_duplicate.csv", [*names[:-1], names[0], *tasks],
                                            labelled.tolist())
    # export --data / analyze --data archives
    np.savez(root / "x_wide.npz", x=rng.standard_normal((4, 7)).astype(np.float32))
    np.savez(root / "x_strings.npz", x=rows.astype(str))
    np.savez(root / "x_nan.npz", x=np.full((4, FEATURES), np.nan, np.float32))
    np.savez(root / "x_empty.npz", x=np.zeros((0, FEATURES), np.float32))
    for name in ("x_wide", "x_strings", "x_nan", "x_empty"):
        p[name] = root / f"{name}.npz"
    p["not_npz"] = root / "not_npz.npz"
    with zipfile.ZipFile(p["not_npz"], "w") as archive:
        archive.writestr("readme.txt", "a zip, not an npz")
    p["garbage_npz"] = root / "garbage.npz"
    p["garbage_npz"].write_bytes(b"PK\x03\x04 truncated")


def _support_files(root: Path, p: dict) -> None:
    """Support sets for the sinusoid model (x (K, 1), y (K, 1)) and the 3-way digits one."""
    root.mkdir()
    rng = np.random.default_rng(1)
    x = rng.uniform(-5, 5, (10, 1)).astype(np.float32)
    y = np.sin(x).astype(np.float32)
    sets = {
        "support": dict(x=x, y=y), "support_y_nan": dict(x=x, y=np.where(np.arange(10)[:, None] == 2, np.nan, y)),
        "support_y_inf": dict(x=x, y=np.full_like(y, np.inf)), "support_x_inf": dict(x=np.full_like(x, np.inf), y=y),
        "support_strings": dict(x=x.astype(str), y=y.astype(str)), "support_wide_y": dict(x=x, y=np.hstack([y, y, y])),
        "support_wrong_x": dict(x=rng.standard_normal((10, 5)).astype(np.float32), y=y),
        "support_short_y": dict(x=x, y=y[:7]), "support_empty": dict(x=x[:0], y=y[:0]),
        "support_objects": dict(x=np.array([None] * 10, dtype=object), y=y), "support_no_y": dict(x=x),
    }
    for name, arrays in sets.items():
        p[name] = root / f"{name}.npz"
        np.savez(p[name], **arrays)
    p["support_x_npy"] = root / "support_x.npy"
    np.save(p["support_x_npy"], x)
    p["support_y7_npy"] = root / "support_y7.npy"
    np.save(p["support_y7_npy"], y[:7])
    digits_x = rng.standard_normal((6, 1, 8, 8)).astype(np.float32)
    for name, labels in {"digits_label_out_of_range": [0, 1, 2, 0, 1, 7],
                         "digits_label_huge": [0, 1, 2, 0, 1, 10**8], "digits_label_negative": [0, 1, 2, 0, 1, -1],
                         "digits_label_fraction": [0, 1, 2, 0, 1, 0.5]}.items():
        p[name] = root / f"{name}.npz"
        np.savez(p[name], x=digits_x, y=np.array(labels))


def _task_files(root: Path, p: dict) -> None:
    """A task file of the ProtoNet adapter (3-way digits), and files that are each a wrong one."""
    from mtl_deploy.runtime import FewShotAdapter

    root.mkdir()
    with np.load(p["digits_label_out_of_range"]) as support:
        x = support["x"]
    p["task"] = FewShotAdapter(p["protonet_adapter"]).adapt(x, np.array([0, 1, 2, 0, 1, 2])).save(root / "task.npz")
    with np.load(p["task"]) as archive:
        good = {name: archive[name] for name in archive.files}
    p["task_other_model"] = FewShotAdapter(p["adapter"]).adapt(*[np.load(p["support"])[k] for k in "xy"]).save(
        root / "other_model.npz")
    p["task_truncated"] = root / "truncated.npz"
    p["task_truncated"].write_bytes(p["task"].read_bytes()[:300])
    p["task_garbage"] = root / "garbage.npz"
    p["task_garbage"].write_bytes(b"not a task file")
    p["task_npy"] = root / "one_array.npy"
    np.save(p["task_npy"], good["prototypes"])
    variants = {"pickled": {**good, "prototypes": np.array([None] * 3, dtype=object)},
                "wrong_shape": {**good, "prototypes": good["prototypes"][:, :5]},
                "wrong_dtype": {**good, "prototypes": good["prototypes"].astype(np.float64)},
                "nan": {**good, "prototypes": np.full_like(good["prototypes"], np.nan)},
                "missing_array": {k: v for k, v in good.items() if k != "prototypes"},
                "newer": {**good, "format_version": np.array(99)},
                "not_a_task": {"prototypes": good["prototypes"]}}
    for name, arrays in variants.items():
        p[f"task_{name}"] = root / f"{name}.npz"
        np.savez(p[f"task_{name}"], **arrays)


def build_workspace(root: Path) -> dict[str, Path]:
    p: dict[str, Path] = {"root": root}
    arts = p["arts"] = root / "arts"
    arts.mkdir(parents=True)
    p["ckpt"] = arts / "ckpt"
    _multitask_run(p["ckpt"], seed=0)
    p["onnx"] = arts / "onnx"
    mtl_deploy.export(p["ckpt"], p["onnx"], batch_sizes=BRIEF)
    for format in ("pt2", "torchscript"):
        p[format] = arts / format
        mtl_deploy.export(p["ckpt"], p[format], format=format, batch_sizes=BRIEF)
    p["maml"] = arts / "maml"
    mtl_deploy.train(_meta_config("sinusoid-maml"), p["maml"], progress=False)
    p["adapter"] = arts / "adapter"
    mtl_deploy.export(p["maml"], p["adapter"], format="adapter")
    p["digits"] = arts / "digits"  # 3-way MAML classifier on the digits
    mtl_deploy.train(_meta_config("digits-maml", ways=3, shots=2, queries=2, translate=0), p["digits"],
                        progress=False)
    p["protonet"] = arts / "protonet"  # a metric learner: any number of ways
    mtl_deploy.train(_meta_config("digits-protonet", ways=3, shots=2, queries=2, translate=0), p["protonet"],
                        progress=False)
    p["protonet_adapter"] = arts / "protonet_adapter"
    mtl_deploy.export(p["protonet"], p["protonet_adapter"], format="adapter")
    torch.manual_seed(0)
    routed = MultiTaskModel((6,), [TaskSpec("north", "regression", 3), TaskSpec("south", "regression", 3)],
                            {"type": "mlp", "hidden": [8]}).eval()
    p["routed_ckpt"] = mtl_deploy.save(routed, arts / "routed_ckpt")
    p["routed"] = arts / "routed"
    mtl_deploy.export(p["routed_ckpt"], p["routed"], routed=True, batch_sizes=BRIEF)
    one = MultiTaskModel((1,), [TaskSpec("y", "regression", 1)], {"type": "mlp", "hidden": [4]}).eval()
    p["one_feature_ckpt"] = mtl_deploy.save(one, arts / "one_feature_ckpt")
    p["one_feature"] = arts / "one_feature"
    mtl_deploy.export(p["one_feature_ckpt"], p["one_feature"], batch_sizes=BRIEF)

    bad = p["bad"] = root / "bad"
    bad.mkdir()
    p["other_ckpt"] = _copy(p["ckpt"], bad / "other_ckpt")
    p["corrupt_manifest"] = _copy(p["onnx"], bad / "corrupt_manifest")
    (p["corrupt_manifest"] / "manifest.json").write_text('{"format": "mtl_deploy.export", "inputs": [')
    p["hollow_manifest"] = _copy(p["onnx"], bad / "hollow_manifest")
    (p["hollow_manifest"] / "manifest.json").write_text('{"format": "mtl_deploy.export"}')
    shutil.copy(p["onnx"] / "model.onnx", root / "outside.onnx")
    p["outside_onnx"] = root / "outside.onnx"
    p["escape_relative"] = _copy(p["onnx"], bad / "escape_relative")
    _rewrite_manifest(p["escape_relative"], artifact="../../outside.onnx")
    p["escape_absolute"] = _copy(p["onnx"], bad / "escape_absolute")
    _rewrite_manifest(p["escape_absolute"], artifact=str(p["outside_onnx"]))
    for graph in ("adapter", "adapt"):
        shutil.copy(p["adapter"] / f"{graph}.onnx", root / f"outside_{graph}.onnx")
    p["adapter_escape"] = _copy(p["adapter"], bad / "adapter_escape")
    _rewrite_manifest(p["adapter_escape"], artifact="../../outside_adapter.onnx",
                      state__adapt="../../outside_adapt.onnx")
    p["tampered_atol"] = _copy(p["onnx"], bad / "tampered_atol")
    _tamper_onnx(p["tampered_atol"])
    _rewrite_manifest(p["tampered_atol"], parity__atol=1e9, parity__rtol=1e9)
    p["tampered_batches"] = _copy(p["onnx"], bad / "tampered_batches")
    _tamper_onnx(p["tampered_batches"])
    _rewrite_manifest(p["tampered_batches"], parity__batch_sizes=[])
    p["wide_ckpt"] = _copy(p["ckpt"], bad / "wide_ckpt")  # a tampered hidden width
    architecture = json.loads((p["wide_ckpt"] / "manifest.json").read_text())["architecture"]
    architecture["trunk"]["hidden"] = [32, 10**9]
    _rewrite_manifest(p["wide_ckpt"], architecture=architecture)
    p["nan_ckpt"] = _checkpoint_with_weights(p["ckpt"], bad / "nan_ckpt", _poison)
    p["corrupt_weights"] = _copy(p["ckpt"], bad / "corrupt_weights")
    (p["corrupt_weights"] / "weights.safetensors").write_bytes(b"garbage")
    p["corrupt_state"] = _copy(p["ckpt"], bad / "corrupt_state")
    (p["corrupt_state"] / "training-state.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    p["foreign_state"] = _copy(p["ckpt"], bad / "foreign_state")  # the state of another run
    _multitask_run(root / "another_run", seed=1)
    shutil.copy(root / "another_run" / "training-state.safetensors", p["foreign_state"])
    shutil.rmtree(root / "another_run")

    p["user"] = root / "user"  # a user's own project directory
    (p["user"] / "src").mkdir(parents=True)
    (p["user"] / "notes.txt").write_text("my notes\n")
    (p["user"] / "src" / "main.py").write_text("print('mine')\n")
    p["user_demo"] = root / "user_demo"  # a demo --out whose checkpoint/ is the user's
    (p["user_demo"] / "checkpoint").mkdir(parents=True)
    (p["user_demo"] / "checkpoint" / "thesis.tex").write_text("\\documentclass{article}\n")
    p["cwd"] = root / "cwd"  # every row runs here: `--out .` and default outputs land here
    p["cwd"].mkdir()
    (p["cwd"] / "todo.txt").write_text("a user's file in the working directory\n")
    p["a_file"] = root / "a_file"
    p["a_file"].write_text("just a file\n")
    p["dangling"] = root / "dangling"
    p["dangling"].symlink_to(root / "nowhere")
    p["outs"] = root / "outs"  # parent of the new outputs the rows name
    p["outs"].mkdir()
    p["missing"] = root / "missing"
    _configs(root / "configs", p)
    _data_files(root / "data", p)
    _support_files(root / "support", p)
    _task_files(root / "tasks", p)
    return p
