"""A user's own network through wrap -> train -> save -> load(trust) -> export -> serve: a
small Hugging Face BERT (built from a config, nothing downloaded) with three tasks, and a
residual network with BatchNorm, LayerNorm, GELU, dropout and two inputs."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import mtl_deploy
import mtl_deploy.mtl
from mtl_deploy import TaskSpec
from mtl_deploy.config import TrainConfig
from mtl_deploy.errors import InputError, MtlDeployError
from mtl_deploy.exporters import verify_export

pytest.importorskip("transformers")

FACTORIES = '''
import torch
from torch import nn
from transformers import BertConfig, BertModel


def tiny_bert(vocab_size=50, hidden=32, layers=2):
    return BertModel(BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=64))


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class TwoInputResNet(nn.Module):
    """An image through residual blocks, a feature vector through LayerNorm + GELU, joined."""

    def __init__(self, width=8, features=5, out=16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(Block(width), Block(width))
        self.side = nn.Sequential(nn.Linear(features, out), nn.LayerNorm(out), nn.GELU(), nn.Dropout(0.1))
        self.join = nn.Linear(width + out, out)

    def forward(self, image, features):
        pooled = self.blocks(self.stem(image)).mean((2, 3))
        return self.join(torch.cat([pooled, self.side(features)], 1))


def vector_net(features=50, width=16):
    return nn.Sequential(nn.Linear(features, width), nn.LayerNorm(width), nn.GELU())


def not_a_module():
    return 42


def resnet_weights_path():
    return __file__
'''

TEXT_TASKS = [TaskSpec("score", "regression"), TaskSpec("topic", "multiclass", 4), TaskSpec("spam", "binary")]


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """A package `mynets` on sys.path, as a user's own code would be."""
    root = tmp_path_factory.mktemp("usercode")
    (root / "mynets").mkdir()
    (root / "mynets" / "__init__.py").write_text(FACTORIES)
    sys.path.insert(0, str(root))
    import mynets

    yield root, mynets
    sys.path.remove(str(root))
    sys.modules.pop("mynets", None)


class TokenData(torch.utils.data.Dataset):
    """Token ids (padded) and three targets read off them."""

    def __init__(self, rows=48, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 50, (rows, 9), generator=gen)
        self.mask = (torch.arange(9) < torch.randint(4, 10, (rows, 1), generator=gen)).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        ids = self.ids[i] * self.mask[i]
        return ({"input_ids": ids, "attention_mask": self.mask[i]},
                {"score": ids.float().mean() / 25, "topic": int(ids[0]) % 4, "spam": int(ids[1] > 25)})


def _examples():
    return {"input_ids": torch.randint(0, 50, (4, 7)), "attention_mask": torch.ones(4, 7, dtype=torch.int64)}


@pytest.fixture(scope="module")
def bert_run(nets, tmp_path_factory):
    _, mynets = nets
    torch.manual_seed(0)
    model = mtl_deploy.wrap(mynets.tiny_bert(), TEXT_TASKS, example_inputs=_examples(), pooling="cls",
                            factory="mynets:tiny_bert", kwargs={})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = mtl_deploy.mtl.train(model, TokenData(), config=TrainConfig(epochs=2, batch_size=16, lr=1e-3,
                                                                         backbone_lr=1e-4), progress=False)
    root = tmp_path_factory.mktemp("bert")
    mtl_deploy.save(model, root / "ckpt")
    return model.eval(), before, result, root


def test_bert_trains_saves_and_loads_only_when_trusted(bert_run):
    model, before, result, root = bert_run
    assert result.epochs_run == 2 and np.isfinite(result.val_loss)
    assert not torch.equal(before["trunk.module.embeddings.word_embeddings.weight"],
                           model.state_dict()["trunk.module.embeddings.word_embeddings.weight"])
    manifest = json.loads((root / "ckpt" / "manifest.json").read_text())
    assert manifest["architecture"]["trunk"]["factory"] == "mynets:tiny_bert"
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "attention_mask"]
    with pytest.raises(InputError, match="not trusted.*--trust mynets"):
        mtl_deploy.load(root / "ckpt")
    loaded = mtl_deploy.load(root / "ckpt", trust=("mynets",))
    batch = TokenData(5, seed=3)[0][0]
    inputs = {k: v[None].repeat(3, 1) for k, v in batch.items()}
    with torch.no_grad():
        want, got = model(inputs), loaded(inputs)
    for name in want:
        torch.testing.assert_close(got[name], want[name])


def test_bert_exports_with_parity_at_several_batches_and_lengths(bert_run, monkeypatch):
    _, _, _, root = bert_run
    monkeypatch.setenv("MTL_DEPLOY_TRUST", "mynets")
    report = mtl_deploy.export(root / "ckpt", root / "onnx", batch_sizes=[1, 3, 16])
    assert report.parity.passed and report.parity.batch_sizes == [1, 3, 16]
    assert report.parity.inputs == ["random, sequence 17", "random, sequence 5"]
    assert report.manifest["inputs"][0] == {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"],
                                            "range": [0, 50]}
    assert verify_export(root / "onnx", root / "ckpt").passed
    routed = mtl_deploy.export(root / "ckpt", root / "routed", routed=True, batch_sizes=[1, 3, 16])
    assert [i["name"] for i in routed.manifest["inputs"]] == ["input_ids", "attention_mask", "task_id"]
    triton = mtl_deploy.export(root / "ckpt", root / "repo", format="triton", triton_name="bert", batch_sizes=[1, 3])
    config = (root / "repo" / "bert" / "config.pbtxt").read_text()
    assert 'name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ]' in config and triton.parity.passed
    for format in ("pt2", "torchscript"):  # torch.export bounds the sequence by the position table itself
        torch_format = mtl_deploy.export(root / "ckpt", root / format, format=format, batch_sizes=[1, 3])
        assert torch_format.parity.passed and "random, sequence 17" in torch_format.parity.inputs


def test_bert_export_is_served_from_token_ids_without_torch(bert_run, tmp_path, monkeypatch):
    model, _, _, root = bert_run
    monkeypatch.setenv("MTL_DEPLOY_TRUST", "mynets")
    if not (root / "onnx").exists():
        mtl_deploy.export(root / "ckpt", root / "onnx", batch_sizes=[1, 3])
    data = TokenData(6, seed=5)
    ids = torch.stack([data[i][0]["input_ids"] for i in range(6)])
    mask = torch.stack([data[i][0]["attention_mask"] for i in range(6)])
    np.savez(tmp_path / "tokens.npz", input_ids=ids.numpy(), attention_mask=mask.numpy())
    code = textwrap.dedent(f"""
        import sys; sys.modules['torch'] = None
        import numpy as np
        from mtl_deploy.runtime import Predictor, predict_file
        tokens = dict(np.load({str(tmp_path / 'tokens.npz')!r}))
        out = Predictor({str(root / 'onnx')!r}).predict(tokens)
        np.savez({str(tmp_path / 'served.npz')!r}, **out)
        assert set(predict_file({str(root / 'onnx')!r}, {str(tmp_path / 'tokens.npz')!r})) == {{'score', 'topic', 'topic_probability', 'spam', 'spam_probability'}}
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(tmp_path))
    served = np.load(tmp_path / "served.npz")
    with torch.no_grad():
        want = model({"input_ids": ids, "attention_mask": mask})
    for name in want:
        np.testing.assert_allclose(served[name], want[name].numpy(), atol=1e-5, rtol=1e-4)


def test_predictor_refuses_token_ids_it_cannot_take(bert_run, monkeypatch):
    from mtl_deploy.runtime import Predictor

    _, _, _, root = bert_run
    monkeypatch.setenv("MTL_DEPLOY_TRUST", "mynets")
    if not (root / "onnx").exists():
        mtl_deploy.export(root / "ckpt", root / "onnx", batch_sizes=[1, 3])
    predictor = Predictor(root / "onnx")
    ids, mask = np.ones((2, 5), np.int64), np.ones((2, 5), np.int64)
    with pytest.raises(InputError, match="pass a dict"):
        predictor.predict(ids)
    with pytest.raises(InputError, match="missing"):
        predictor.predict({"input_ids": ids})
    with pytest.raises(InputError, match="axis 'sequence' is 5"):
        predictor.predict({"input_ids": ids, "attention_mask": np.ones((2, 6), np.int64)})
    with pytest.raises(InputError, match=r"values in \[0, 50\)"):
        predictor.predict({"input_ids": ids * 99, "attention_mask": mask})


def test_a_hugging_face_model_saves_without_a_factory(tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(1)
    bert = BertModel(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=32))
    model = mtl_deploy.wrap(bert, TEXT_TASKS[:2], example_inputs=_examples() | {"input_ids": torch.randint(0, 30, (4, 7))})
    mtl_deploy.save(model, tmp_path / "ckpt")
    loaded = mtl_deploy.load(tmp_path / "ckpt")  # transformers rebuilds it from its config: nothing to trust
    inputs = {"input_ids": torch.randint(0, 30, (2, 6)), "attention_mask": torch.tensor([[1] * 6, [1] * 3 + [0] * 3])}
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs)["topic"], model.eval()(inputs)["topic"])


# --- a residual network with two inputs: factory -> train -> export -> int8 -> verify ---

class ImageAndFeatures(torch.utils.data.Dataset):
    def __init__(self, rows=64):
        gen = torch.Generator().manual_seed(0)
        self.image, self.features = torch.randn(rows, 1, 8, 8, generator=gen), torch.randn(rows, 5, generator=gen)

    def __len__(self):
        return len(self.image)

    def __getitem__(self, i):
        image, features = self.image[i], self.features[i]
        return ((image, features), {"bright": image.mean() + features[0], "sign": int(features[1] > 0)})


def test_residual_network_with_two_inputs_through_int8_and_verify(nets, tmp_path):
    _, mynets = nets
    torch.manual_seed(0)
    tasks = [TaskSpec("bright", "regression"), TaskSpec("sign", "binary")]
    example = {"image": torch.randn(4, 1, 8, 8), "features": torch.randn(4, 5)}
    model = mtl_deploy.wrap(mynets.TwoInputResNet(), tasks, example_inputs=example,
                            factory="mynets:TwoInputResNet", kwargs={"width": 8})
    data = ImageAndFeatures()
    keyed = [({"image": x[0][0], "features": x[0][1]}, x[1]) for x in (data[i] for i in range(len(data)))]
    result = mtl_deploy.mtl.train(model, keyed, config=TrainConfig(epochs=3, batch_size=16, aggregation="pcgrad"),
                                  progress=False)
    assert result.task_affinity is not None  # the per-task gradients were aggregated
    mtl_deploy.save(model, tmp_path / "ckpt", sample_inputs={"image": data.image[:16], "features": data.features[:16]})
    report = mtl_deploy.export(tmp_path / "ckpt", tmp_path / "onnx", quantize="int8", max_quantization_error=1.0,
                               trust=("mynets",))
    assert report.parity.passed and "real" in report.parity.inputs
    assert [i["name"] for i in report.manifest["inputs"]] == ["image", "features"]
    assert (tmp_path / "onnx" / "model.int8.onnx").is_file()
    assert verify_export(tmp_path / "onnx", tmp_path / "ckpt", trust=("mynets",)).passed
    assert verify_export(tmp_path / "onnx").passed
    pt2 = mtl_deploy.export(tmp_path / "ckpt", tmp_path / "pt2", format="pt2", trust=("mynets",))
    assert pt2.parity.passed


def test_frozen_batchnorm_stays_in_eval_mode_and_gets_no_update(nets):
    _, mynets = nets
    torch.manual_seed(0)
    example = {"image": torch.randn(4, 1, 8, 8), "features": torch.randn(4, 5)}
    model = mtl_deploy.wrap(mynets.TwoInputResNet(), [TaskSpec("bright", "regression")], example_inputs=example,
                            freeze=["stem", "blocks"])
    model.train()
    assert not model.trunk.module.stem[1].training and model.trunk.module.side.training
    stats = model.trunk.module.stem[1].running_mean.clone()
    frozen = model.trunk.module.stem[0].weight.clone()
    data = [({"image": torch.randn(1, 8, 8), "features": torch.randn(5)}, {"bright": float(i % 3)}) for i in range(32)]
    mtl_deploy.mtl.train(model, data, config=TrainConfig(epochs=1, batch_size=8), progress=False)
    assert torch.equal(model.trunk.module.stem[1].running_mean, stats)
    assert torch.equal(model.trunk.module.stem[0].weight, frozen)


# --- what must never run, and every bad input answered in one line ---

@pytest.mark.parametrize("factory", ["os:system", "builtins:eval", "subprocess:run"])
def test_a_manifest_naming_a_command_runner_is_never_called(bert_run, tmp_path, factory, monkeypatch):
    import os
    import shutil

    _, _, _, root = bert_run
    shutil.copytree(root / "ckpt", tmp_path / "ckpt")
    manifest_path = tmp_path / "ckpt" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["architecture"]["trunk"].update(factory=factory, kwargs={"command": "touch pwned"})
    manifest_path.write_text(json.dumps(manifest))
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    package = factory.split(":")[0]
    for trust in ((), (package,)):
        with pytest.raises(InputError, match="never imported as a model factory"):
            mtl_deploy.load(tmp_path / "ckpt", trust=trust)
    assert calls == [] and not (tmp_path / "pwned").exists()


def test_bad_user_models_each_get_one_line(nets, tmp_path):
    root, mynets = nets
    example = {"image": torch.randn(4, 1, 8, 8), "features": torch.randn(4, 5)}
    tasks = [TaskSpec("bright", "regression")]
    with pytest.raises(InputError, match="fails on the example inputs"):
        mtl_deploy.wrap(mynets.TwoInputResNet(), tasks, example_inputs={"image": torch.randn(4, 3, 8, 8),
                                                                          "features": torch.randn(4, 5)})
    with pytest.raises(InputError, match="must be a torch.nn.Module"):
        mtl_deploy.wrap(lambda x: x, tasks, example_inputs=torch.randn(4, 3))
    with pytest.raises(InputError, match="cannot save.*factory="):
        mtl_deploy.save(mtl_deploy.wrap(mynets.TwoInputResNet(), tasks, example_inputs=example), tmp_path / "c0")
    assert not (tmp_path / "c0").exists()
    assert mtl_deploy.export(mtl_deploy.wrap(mynets.TwoInputResNet(), tasks, example_inputs=example),
                             tmp_path / "e0", batch_sizes=[2]).parity.passed  # export needs no factory
    with pytest.raises(InputError, match="ONNX operator's name"):
        mtl_deploy.export(mtl_deploy.wrap(mynets.TwoInputResNet(), [TaskSpec("Relu", "regression")],
                                          example_inputs=example), tmp_path / "e1")
    model = mtl_deploy.wrap(mynets.TwoInputResNet(), tasks, example_inputs=example,
                            factory="mynets:TwoInputResNet", kwargs={"out": 16})
    mtl_deploy.save(model, tmp_path / "ckpt")

    def edited(**trunk):
        target = tmp_path / f"edited{len(list(tmp_path.iterdir()))}"
        import shutil
        shutil.copytree(tmp_path / "ckpt", target)
        manifest = json.loads((target / "manifest.json").read_text())
        manifest["architecture"]["trunk"].update(trunk)
        (target / "manifest.json").write_text(json.dumps(manifest))
        return target

    cases = [({"factory": "mynets_missing:net"}, "not trusted"),
             ({"factory": "mynets.nowhere:net"}, "cannot be imported"),
             ({"factory": "mynets:not_a_module", "kwargs": {}}, "not a torch.nn.Module"),
             ({"kwargs": {"out": 12}}, "output width is 12, the heads expect 16"),
             ({"kwargs": {"width": 4}}, "does not fit the manifest's architecture")]
    for change, message in cases:
        with pytest.raises(MtlDeployError, match=message):
            mtl_deploy.load(edited(**change), trust=("mynets",))


def test_trunk_weights_that_do_not_fit_the_factory_are_refused(nets, tmp_path):
    from safetensors.torch import save_file

    from mtl_deploy.models.module_trunk import trunk_from_config

    _, mynets = nets
    save_file(mynets.TwoInputResNet(width=4).state_dict(), tmp_path / "w.safetensors")
    config = {"type": "module", "factory": "mynets:TwoInputResNet", "kwargs": {"width": 8},
              "weights": str(tmp_path / "w.safetensors"),
              "example_inputs": {"image": {"shape": [1, 8, 8]}, "features": {"shape": [5]}}}
    from mtl_deploy.trust import trusting
    with trusting(["mynets"]), pytest.raises(InputError, match="do not fit the factory's model"):
        trunk_from_config(config)
    save_file(mynets.TwoInputResNet(width=8).state_dict(), tmp_path / "w.safetensors")
    with trusting(["mynets"]):
        assert trunk_from_config(config).out_features == 16


def test_a_local_hugging_face_directory_is_a_trunk_config(tmp_path, monkeypatch):
    from transformers import BertConfig, BertModel

    torch.manual_seed(2)
    BertModel(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(tmp_path / "hf")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True, raising=False)
    model = mtl_deploy.wrap({"type": "transformers", "path": str(tmp_path / "hf"), "pooling": "mean"}, TEXT_TASKS)
    assert model.signature.names == ["input_ids", "attention_mask"]
    assert model.signature.specs[0].high == 40
    report = mtl_deploy.export(model, tmp_path / "onnx", batch_sizes=[1, 3])
    assert report.parity.passed and "random, sequence 17" in report.parity.inputs
    with pytest.raises(InputError, match="no config.json"):
        mtl_deploy.wrap({"type": "transformers", "path": str(tmp_path)}, TEXT_TASKS)


def test_the_cli_needs_trust_for_a_user_factory(bert_run, nets, tmp_path):
    from typer.testing import CliRunner

    from mtl_deploy.cli import app

    _, _, _, root = bert_run
    refused = CliRunner().invoke(app, ["export", str(root / "ckpt"), "--out", str(tmp_path / "e")])
    assert refused.exit_code == 2 and "--trust mynets" in refused.output and not (tmp_path / "e").exists()
    done = CliRunner().invoke(app, ["export", str(root / "ckpt"), "--out", str(tmp_path / "e"), "--trust", "mynets"])
    assert done.exit_code == 0, done.output


class Branchy(torch.nn.Module):
    """Python control flow on a value: torch.export cannot trace it."""

    def forward(self, x):
        return x * 2 if x.sum() > 0 else x - 1


def test_any_module_exports_as_it_is_with_its_own_outputs(tmp_path):
    from transformers import BertConfig, BertModel

    from mtl_deploy.runtime import Predictor

    torch.manual_seed(3)
    bert = BertModel(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=32))
    example = {"input_ids": torch.randint(0, 40, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.int64)}
    report = mtl_deploy.export(bert, tmp_path / "bert", example_inputs=example, batch_sizes=[1, 3])
    assert report.parity.passed and set(report.parity.outputs) == {"last_hidden_state", "pooler_output"}
    assert report.manifest["outputs"][0]["shape"] == ["batch", "sequence", 16]
    tokens = {"input_ids": np.array([[1, 2, 3, 4, 5, 6, 7]]), "attention_mask": np.ones((1, 7), np.int64)}
    with torch.no_grad():
        want = bert(**{k: torch.from_numpy(v) for k, v in tokens.items()}).last_hidden_state.numpy()
    got = Predictor(tmp_path / "bert").predict(tokens)["last_hidden_state"]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
    pair = torch.nn.Bilinear(3, 4, 2)
    named = mtl_deploy.export(torch.nn.ModuleList([pair])[0], tmp_path / "pair", format="pt2",
                              example_inputs=(torch.randn(4, 3), torch.randn(4, 4)), output_names=["score"])
    assert named.parity.passed and [o["name"] for o in named.manifest["outputs"]] == ["score"]
    with pytest.raises(InputError, match="give example_inputs"):
        mtl_deploy.export(pair, tmp_path / "none")
    with pytest.raises(InputError, match="output_names has 2 names"):
        mtl_deploy.export(pair, tmp_path / "none", example_inputs=(torch.randn(4, 3), torch.randn(4, 4)),
                          output_names=["a", "b"])


def test_a_module_the_exporter_cannot_take_fails_in_one_line_with_a_report(tmp_path):
    from pathlib import Path

    with pytest.raises(MtlDeployError, match=r"ONNX export of Branchy failed: .*full exporter report: ") as err:
        mtl_deploy.export(Branchy(), tmp_path / "e", example_inputs=torch.randn(4, 3))
    message = str(err.value)
    assert "\n" not in message and not (tmp_path / "e").exists()
    report = Path(message.rsplit("full exporter report: ", 1)[1].rstrip(")"))
    assert "Traceback" in report.read_text()
    report.unlink()


@pytest.mark.slow
def test_a_wrapped_network_compiles_to_an_aoti_package(nets, tmp_path):
    _, mynets = nets
    torch.manual_seed(0)
    example = {"image": torch.randn(4, 1, 8, 8), "features": torch.randn(4, 5)}
    model = mtl_deploy.wrap(mynets.TwoInputResNet(), [TaskSpec("bright", "regression"), TaskSpec("sign", "binary")],
                            example_inputs=example)
    report = mtl_deploy.export(model, tmp_path / "aoti", format="aoti", batch_sizes=[1, 5])
    assert report.parity.passed and report.manifest["artifact"] == "model.aoti.pt2"


def test_a_run_config_trains_a_factory_trunk_from_the_command_line(nets, tmp_path):
    from typer.testing import CliRunner

    from mtl_deploy.cli import app

    config = {"data": {"source": "synthetic", "synthetic": {"n_rows": 120, "seed": 0}},
              "model": {"trunk": {"type": "module", "factory": "mynets:vector_net", "kwargs": {"width": 12},
                                  "example_inputs": {"x": {"shape": [50]}}}},
              "train": {"epochs": 3, "batch_size": 32}}
    (tmp_path / "run.json").write_text(json.dumps(config))
    runner = CliRunner()
    refused = runner.invoke(app, ["train", str(tmp_path / "run.json"), "--out", str(tmp_path / "run")])
    assert refused.exit_code == 2 and "--trust mynets" in refused.output
    done = runner.invoke(app, ["train", str(tmp_path / "run.json"), "--out", str(tmp_path / "run"),
                               "--trust", "mynets"])
    assert done.exit_code == 0, done.output
    model = mtl_deploy.load(tmp_path / "run", trust=("mynets",))
    assert model.trunk.out_features == 12
    assert mtl_deploy.export(tmp_path / "run", tmp_path / "onnx", trust=("mynets",)).parity.passed


def test_pooling_turns_each_output_kind_into_feature_rows():
    from types import SimpleNamespace

    from mtl_deploy.models.module_trunk import features_of

    sequence = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    torch.testing.assert_close(features_of(sequence, "auto", mask)[0], sequence[0, :2].mean(0))
    torch.testing.assert_close(features_of(sequence, "cls"), sequence[:, 0])
    feature_map = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(features_of(feature_map, "auto"), feature_map.mean((2, 3)))
    assert features_of(feature_map, "flatten").shape == (2, 36)
    hf = SimpleNamespace(last_hidden_state=sequence, pooler_output=torch.randn(2, 3))
    assert features_of(hf, "auto") is hf.pooler_output
    torch.testing.assert_close(features_of((sequence, None), "mean"), sequence.mean(1))
    with pytest.raises(InputError, match="pooler_output"):
        features_of(sequence, "pooler")


# --- MLP heads: each task's own hidden layers before its linear layer ---

def test_mlp_heads_train_save_load_and_export_with_parity(tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(2)
    bert = BertModel(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=32))
    spec = {"hidden": [12, 8], "activation": "gelu", "dropout": 0.1}
    tasks = [TaskSpec("topic", "multiclass", 4), TaskSpec("spam", "binary"), TaskSpec("score", "regression")]
    example = _examples() | {"input_ids": torch.randint(0, 30, (4, 7))}
    model = mtl_deploy.wrap(bert, tasks, example_inputs=example, heads=spec, pooling="cls")
    assert model.heads.hidden["topic"][0].out_features == 12 and model.heads.stacks["out1"].weight.shape[2] == 8
    gen = torch.Generator().manual_seed(0)
    rows = [({"input_ids": torch.randint(0, 30, (7,), generator=gen), "attention_mask": torch.ones(7, dtype=torch.int64)},
             {"topic": i % 4, "spam": i % 2, "score": float(i % 3)}) for i in range(32)]
    before = model.heads.hidden["spam"][0].weight.detach().clone()
    mtl_deploy.mtl.train(model, rows, config=TrainConfig(epochs=2, batch_size=8, aggregation="pcgrad"), progress=False)
    assert not torch.equal(model.heads.hidden["spam"][0].weight, before)  # the task's own layers train
    mtl_deploy.save(model, tmp_path / "ckpt")
    loaded = mtl_deploy.load(tmp_path / "ckpt")
    assert loaded.heads.spec == spec
    inputs = {"input_ids": torch.randint(0, 30, (3, 5)), "attention_mask": torch.ones(3, 5, dtype=torch.int64)}
    with torch.no_grad():
        want = model.eval()(inputs)
        for name, value in loaded.eval()(inputs).items():
            torch.testing.assert_close(value, want[name])
    assert mtl_deploy.export(tmp_path / "ckpt", tmp_path / "onnx").parity.passed
    assert mtl_deploy.export(tmp_path / "ckpt", tmp_path / "routed", routed=True).parity.passed  # zero-padded


@pytest.mark.parametrize("spec, message", [({"hidden": []}, "hidden"), ({"hidden": [8], "activation": "swish"}, "activation"),
                                           ({"hidden": [8], "dropout": 1.0}, "dropout"), ({"width": 3}, "heads must be"),
                                           ("mlp", "heads must be")])
def test_bad_head_specs_are_one_clear_error(spec, message):
    with pytest.raises(InputError, match=message):
        mtl_deploy.wrap(torch.nn.Linear(5, 4), TEXT_TASKS[:1], example_inputs=torch.randn(2, 5), heads=spec)
