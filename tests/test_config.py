"""The config schema: every value is checked by its field's rule, whether it comes from a
file, a preset, a resumed run's saved config, a Python override or a CLI flag; each bad
value is one line naming its section and key. The schema's names follow the modules that
own them, and `train`'s flags map to config keys without running anything."""

import inspect
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtl_deploy.cli import app
from mtl_deploy.config import (SHARING, SYNTHETIC, TRAIN_FLAGS, TRUNK, RunConfig, apply_overrides, check_config,
                               config_from_dict, overrides_from_flags, preset_names, resolve_config)
from mtl_deploy.data.synthetic import SyntheticFamily, synthetic_family
from mtl_deploy.errors import InputError
from mtl_deploy.models import trunks
from mtl_deploy.models.sharing import SCHEMES

META = {"algorithm": "maml", "family": "sinusoid"}

# (config, the message after "config.json: "), at least one row per kind of rule and per section
BAD_VALUES = [
    # integers: bool is not an int, strings and floats are not either, and ranges hold
    ({"train": {"epochs": -3}}, "[train] epochs must be an integer >= 1, got -3"),
    ({"train": {"epochs": "5"}}, "[train] epochs must be an integer >= 1, got '5'"),
    ({"train": {"epochs": True}}, "[train] epochs must be an integer >= 1, got True"),
    ({"train": {"batch_size": 0}}, "[train] batch_size must be an integer >= 1, got 0"),
    ({"train": {"batch_size": 32.0}}, "[train] batch_size must be an integer >= 1, got 32.0"),
    ({"train": {"patience": 0}}, "[train] patience must be an integer >= 1, got 0"),
    ({"train": {"checkpoint_every": None}}, "[train] checkpoint_every must be an integer >= 1, got None"),
    ({"train": {"seed": -1}}, "[train] seed must be an integer >= 0, got -1"),
    ({"meta": {**META, "ways": 1}}, "[meta] ways must be an integer >= 2, got 1"),
    ({"meta": {**META, "shots": 0}}, "[meta] shots must be an integer >= 1, got 0"),
    ({"meta": {**META, "adapt_steps": -1}}, "[meta] adapt_steps must be an integer >= 0, got -1"),
    ({"meta": {**META, "iterations": "many"}}, "[meta] iterations must be an integer >= 1, got 'many'"),
    # floats: finite, in range; an int is a float
    ({"train": {"lr": float("nan")}}, "[train] lr must be a finite number > 0, got nan"),
    ({"train": {"lr": float("inf")}}, "[train] lr must be a finite number > 0, got inf"),
    ({"train": {"lr": -0.1}}, "[train] lr must be a finite number > 0, got -0.1"),
    ({"train": {"lr": "0.1"}}, "[train] lr must be a finite number > 0, got '0.1'"),
    ({"train": {"weight_decay": -1}}, "[train] weight_decay must be a finite number >= 0, got -1"),
    ({"meta": {**META, "inner_lr": 0}}, "[meta] inner_lr must be a finite number > 0, got 0"),
    ({"meta": {**META, "outer_lr": False}}, "[meta] outer_lr must be a finite number > 0, got False"),
    ({"data": {"val_fraction": 1.0}}, "[data] val_fraction must be a number in (0, 1), got 1.0"),
    ({"data": {"val_fraction": 0}}, "[data] val_fraction must be a number in (0, 1), got 0"),
    # lists: length, items, sums, repeats
    ({"meta": {**META, "class_split": [0.5, 0.5, 0.5]}}, "[meta] class_split must sum to 1, got [0.5, 0.5, 0.5]"),
    ({"meta": {**META, "class_split": [0.5, 0.5]}}, "[meta] class_split must be a list of 3, each item a number"),
    ({"meta": {**META, "class_split": [0.5, 0.5, -0.1]}}, "[meta] class_split[2] must be a number in [0, 1], got -0.1"),
    ({"data": {"feature_columns": ["a", "a"]}}, "[data] feature_columns repeats the entries ['a']"),
    ({"data": {"feature_columns": []}}, "[data] feature_columns must be a non-empty list, each item a non-empty"),
    # choices come from the modules that own the names
    ({"train": {"weighting": "magic"}}, "[train] weighting must be one of equal, static, uncertainty"),
    ({"train": {"aggregation": "avg"}}, "[train] aggregation must be one of none, mean, pcgrad"),
    ({"meta": {**META, "algorithm": "mamll"}}, "[meta] algorithm must be one of maml, fomaml"),
    ({"meta": {**META, "family": "imagenet"}}, "[meta] family must be one of sinusoid, digits, npz, image-folder, omniglot"),
    ({"data": {"source": "parquet"}}, "[data] source must be one of synthetic, csv, npz, got 'parquet'"),
    ({"data": {"path": ""}}, "[data] path must be a non-empty string or null, got ''"),
    # options of the method a sibling names
    ({"train": {"weighting": "gradnorm", "weighting_options": {"beta": 1}}},
     "[train] weighting_options has option(s) ['beta'] that weighting 'gradnorm' does not take; it takes alpha"),
    ({"train": {"aggregation": "cagrad", "aggregation_options": {"c": float("nan")}}},
     "[train] aggregation_options.c must be finite, got nan"),
    ({"train": {"aggregation_options": {"c": 0.5}}}, "[train] aggregation_options has option(s) ['c'] that aggregation"),
    # model.trunk: by its type
    ({"model": {"trunk": {"type": "mlp", "hidden": [64, -1]}}}, "[model] trunk.hidden[1] must be an integer >= 1, got -1"),
    ({"model": {"trunk": {"hidden": []}}}, "[model] trunk.hidden must be a non-empty list"),
    ({"model": {"trunk": {"hidden": "64"}}}, "[model] trunk.hidden must be a non-empty list"),
    ({"model": {"trunk": {"activation": "swish"}}}, "[model] trunk.activation must be one of relu, tanh, gelu"),
    ({"model": {"trunk": {"dropout": 1.0}}}, "[model] trunk.dropout must be a number in [0, 1), got 1.0"),
    ({"model": {"trunk": {"dropout": -0.1}}}, "[model] trunk.dropout must be a number in [0, 1), got -0.1"),
    ({"model": {"trunk": {"type": "transformer"}}}, "[model] trunk.type must be one of mlp, conv"),
    ({"model": {"trunk": {"type": "conv", "hidden": [8]}}},
     "[model] trunk has unknown key(s) ['hidden'] for type 'conv'; allowed: type, channels, norm"),
    ({"model": {"trunk": {"type": "conv", "norm": "layer"}}}, "[model] trunk.norm must be one of batch, none"),
    ({"model": {"trunk": {"type": "conv", "channels": [0]}}}, "[model] trunk.channels[0] must be an integer >= 1"),
    ({"model": {"trunk": [64, 64]}}, "[model] trunk must be an object with a 'type' (mlp, conv, module, transformers)"),
    # model.sharing: by its scheme
    ({"model": {"sharing": {"scheme": "shared"}}}, "[model] sharing.scheme must be one of hard, soft"),
    ({"model": {"sharing": {"scheme": "mmoe", "experts": 0}}}, "[model] sharing.experts must be an integer >= 1"),
    ({"model": {"sharing": {"scheme": "soft", "strenght": 1}}},
     "[model] sharing has unknown key(s) ['strenght'] for scheme 'soft'"),
    ({"model": {"sharing": {"scheme": "soft", "coupling": "l1"}}}, "[model] sharing.coupling must be one of l2, trace_norm"),
    ({"model": {"sharing": {"scheme": "soft", "strength": -1}}}, "[model] sharing.strength must be a finite number >= 0"),
    ({"model": {"sharing": {"scheme": "cross_stitch", "self_weight": 2}}}, "[model] sharing.self_weight must be a number in [0, 1]"),
    ({"model": {"sharing": {"scheme": "hierarchical", "groups": [[]]}}}, "[model] sharing.groups[0] must be a non-empty list"),
    ({"model": {"sharing": {"scheme": "hierarchical", "group_hidden": [0]}}}, "[model] sharing.group_hidden[0] must be"),
    ({"model": {"sharing": {"experts": 2}}}, "[model] sharing has unknown key(s) ['experts'] for scheme 'hard'"),
    # data.tasks entries and the synthetic options
    ({"data": {"tasks": [{"name": "a", "kind": "regression"}, {"name": "a", "kind": "binary"}]}},
     "[data] tasks repeats the name(s) ['a']; each must appear once"),
    ({"data": {"tasks": [{"name": "a", "kind": "ordinal"}]}}, "[data] tasks[0].kind must be one of regression, multiclass, binary"),
    ({"data": {"tasks": [{"kind": "binary"}]}}, "[data] tasks[0] needs the key(s) name"),
    ({"data": {"tasks": [{"name": "", "kind": "binary"}]}}, "[data] tasks[0].name must be a non-empty string, got ''"),
    ({"data": {"tasks": [{"name": "a", "kind": "regression", "out_dim": 0}]}}, "[data] tasks[0].out_dim must be an integer >= 1"),
    ({"data": {"tasks": [{"name": "a", "kind": "regression", "dims": 2}]}}, "[data] tasks[0] has unknown key(s) ['dims']"),
    ({"data": {"tasks": {"name": "a"}}}, "[data] tasks must be a list"),
    ({"data": {"synthetic": {"n_rows": 0}}}, "[data] synthetic.n_rows must be an integer >= 1, got 0"),
    ({"data": {"synthetic": {"relatedness": 1.5}}}, "[data] synthetic.relatedness must be a number in [0, 1], got 1.5"),
    ({"data": {"synthetic": {"rows": 10}}}, "[data] synthetic has unknown key(s) ['rows']"),
    # no message pastes a huge value
    ({"train": {"epochs": "x" * 10_000}}, "[train] epochs must be an integer >= 1, got 'xxxxxxxxxxxx...xxxxxxxxxxxxx'"),
]


@pytest.mark.parametrize("config, message", BAD_VALUES, ids=[m[:60] for _, m in BAD_VALUES])
def test_each_bad_value_names_its_section_and_key(config, message):
    with pytest.raises(InputError) as caught:
        config_from_dict(config, "config.json")
    text = str(caught.value)
    assert text.startswith("config.json: [") and message in text, text
    assert len(text) < 300 and "\n" not in text


def test_every_preset_passes_and_numbers_are_normalised():
    for name in preset_names():
        resolve_config(preset=name)
    config = config_from_dict({"train": {"lr": 1}, "meta": {**META, "class_split": [0.5, 0.25, 0.25]}})
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.meta.class_split == [0.5, 0.25, 0.25]


def test_a_config_file_is_checked_and_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"train": {"epochs": -3}}))
    with pytest.raises(InputError, match=rf"^{path}: \[train\] epochs must be an integer >= 1, got -3$"):
        resolve_config(path)


BAD_OVERRIDES = [
    ({"train.epochs": 0}, "override: [train] epochs must be an integer >= 1, got 0"),
    ({"train.seed": "3"}, "override: [train] seed must be an integer >= 0, got '3'"),
    ({"meta.iterations": -1}, "override: [meta] iterations must be an integer >= 1, got -1"),  # checked though absent
    ({"data.path": ""}, "override: [data] path must be a non-empty string or null"),
    ({"train.epoch": 3}, "override: unknown config key 'train.epoch'"),
    ({"epochs": 3}, "override: unknown config key 'epochs'"),
]


@pytest.mark.parametrize("overrides, message", BAD_OVERRIDES)
def test_overrides_follow_the_same_rules(overrides, message):
    with pytest.raises(InputError) as caught:
        resolve_config(preset="synthetic-related", overrides=overrides)
    assert str(caught.value).startswith(message), str(caught.value)
    config = RunConfig()
    with pytest.raises(InputError):
        apply_overrides(config, overrides)
    assert config == RunConfig()  # a refused override changes nothing


def test_check_config_checks_a_config_built_in_python():
    config = RunConfig()
    config.train.epochs = -3
    with pytest.raises(InputError, match=r"^config: \[train\] epochs must be an integer >= 1, got -3$"):
        check_config(config)


def test_train_flags_map_to_config_keys():
    assert overrides_from_flags(data=Path("d.csv"), epochs=5, iterations=7, seed=3, checkpoint_every=11) == {
        "data.path": "d.csv", "meta.path": "d.csv", "train.epochs": 5, "meta.iterations": 7, "train.seed": 3, "meta.seed": 3,
        "train.checkpoint_every": 11, "meta.checkpoint_every": 11}
    assert overrides_from_flags(data=None, epochs=None, iterations=None, seed=None, checkpoint_every=None) == {}
    assert overrides_from_flags(seed=0) == {"train.seed": 0, "meta.seed": 0}  # 0 is given, not absent
    every_key = {key for keys in TRAIN_FLAGS.values() for key in keys} - {"data.path", "meta.path", "train.device",
                                                                          "meta.device"}  # the numbers
    config = apply_overrides(config_from_dict({"meta": META}), dict.fromkeys(every_key, 2))  # every key is a field
    assert config.train.epochs == config.meta.iterations == config.meta.seed == 2
    train = next(c.callback for c in app.registered_commands if c.callback.__name__ == "train")
    assert set(TRAIN_FLAGS) <= set(inspect.signature(train).parameters)


def test_schema_names_follow_their_owners():
    """The per-kind option tables cover exactly the kinds and keyword arguments the model code takes."""
    assert set(TRUNK.options) == set(trunks.TRUNK_TYPES)
    assert set(TRUNK.options["mlp"]) == set(inspect.signature(trunks.MLPTrunk).parameters) - {"in_features"}
    assert set(TRUNK.options["conv"]) == set(inspect.signature(trunks.ConvTrunk).parameters) - {"in_channels",
                                                                                                "image_size"}
    assert set(SHARING.options) == set(SCHEMES)
    for scheme, cls in SCHEMES.items():
        assert set(SHARING.options[scheme]) == set(inspect.signature(cls).parameters) - {"input_shape", "tasks",
                                                                                         "trunk"}, scheme
    takes = set(inspect.signature(synthetic_family).parameters) | set(inspect.signature(SyntheticFamily).parameters)
    assert set(SYNTHETIC.keys) == takes - {"family_options", "tasks"}


runner = CliRunner()

CLI_ROWS = [
    (["--epochs", "-3"], {}, "[train] epochs must be an integer >= 1, got -3"),
    (["--epochs", "0"], {}, "[train] epochs must be an integer >= 1, got 0"),
    (["--seed", "-1"], {}, "[train] seed must be an integer >= 0, got -1"),
    (["--checkpoint-every", "0"], {}, "[train] checkpoint_every must be an integer >= 1, got 0"),
    (["--iterations", "0"], {"meta": META}, "[meta] iterations must be an integer >= 1, got 0"),
    ([], {"train": {"lr": "fast"}}, "[train] lr must be a finite number > 0, got 'fast'"),
    ([], {"train": {"epochs": -3}}, "[train] epochs must be an integer >= 1, got -3"),
    ([], {"model": {"trunk": {"activation": "swish"}}}, "[model] trunk.activation must be one of relu, tanh, gelu"),
    ([], {"data": {"tasks": [{"name": "a", "kind": "nope"}]}}, "[data] tasks[0].kind must be one of"),
    ([], {"meta": {**META, "ways": 0}}, "[meta] ways must be an integer >= 2, got 0"),
]


@pytest.mark.parametrize("flags, config, message", CLI_ROWS, ids=[m[:50] for *_, m in CLI_ROWS])
def test_cli_refuses_bad_values_in_one_line(tmp_path, flags, config, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = runner.invoke(app, ["train", str(path), "--out", str(tmp_path / "run"), *flags])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # nothing written


def test_a_resumed_runs_saved_config_is_checked(tmp_path):
    maml = {"meta": {**META, "shots": 2, "queries": 2, "meta_batch": 2, "iterations": 3, "val_every": 3,
                     "val_tasks": 2, "checkpoint_every": 3}, "model": {"trunk": {"hidden": [8]}}}
    path, run = tmp_path / "maml.json", tmp_path / "run"
    path.write_text(json.dumps(maml))
    assert runner.invoke(app, ["train", str(path), "--out", str(run)]).exit_code == 0
    saved = json.loads((run / "config.json").read_text())
    saved["meta"]["inner_lr"] = -1
    (run / "config.json").write_text(json.dumps(saved))
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "config.json: [meta] inner_lr must be a finite number > 0, got -1" in lines[0], lines
    saved["meta"]["inner_lr"] = 0.01
    (run / "config.json").write_text(json.dumps(saved))
    result = runner.invoke(app, ["train", "--resume", str(run), "--iterations", "-5"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == "error: override: [meta] iterations must be an integer >= 1, got -5"
