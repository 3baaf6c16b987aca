"""Few-shot on a frozen backbone with no meta-training: prototype, matching and finetune
heads adapt with `mtl_deploy.adapt`, and their adapter graphs, served with torch blocked,
match adapt + forward on held-out episodes."""

import dataclasses
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import mtl_deploy
from mtl_deploy.config import MetaConfig
from mtl_deploy.errors import InputError


class Encoder(nn.Module):
    """A small image encoder with BatchNorm, standing in for a pretrained one."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 16))

    def forward(self, x):
        return self.net(x)


def _episode(seed, ways=3, shots=2, queries=7):
    """Classes that differ in where the image is bright, so the encoder's features separate them."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(ways, 1, 8, 8, generator=gen) * 2
    labels = torch.arange(ways).repeat(shots)
    support = centres[labels] + 0.3 * torch.randn(len(labels), 1, 8, 8, generator=gen)
    query_labels = torch.arange(queries) % ways
    query = centres[query_labels] + 0.3 * torch.randn(queries, 1, 8, 8, generator=gen)
    return support, labels, query, query_labels


@pytest.mark.parametrize("head", ["prototypes", "finetune"])
def test_adapter_graph_served_without_torch_matches_adapt(head, tmp_path):
    torch.manual_seed(0)
    model = mtl_deploy.fewshot(Encoder(), head, example_inputs=torch.randn(4, 1, 8, 8), ways=3, steps=30, lr=0.5)
    assert all(not p.requires_grad for p in model.trunk.parameters())
    report = mtl_deploy.export(model, tmp_path / "adapter", format="adapter")
    assert report.parity.passed
    episodes = [_episode(seed) for seed in (11, 12, 13)]
    expected, correct = [], 0
    for support, labels, query, query_labels in episodes:
        with torch.no_grad():
            logits = mtl_deploy.adapt(model, support, labels)(query)["class"]
        expected.append(logits.numpy())
        correct += int((logits.argmax(1) == query_labels).sum())
    assert correct / sum(len(e[2]) for e in episodes) > 0.6  # the frozen features do classify
    np.savez(tmp_path / "episodes.npz", **{f"{k}{i}": v.numpy() for i, e in enumerate(episodes)
                                           for k, v in zip(("sx", "sy", "q"), e[:3])})
    code = textwrap.dedent(f"""
        import sys; sys.modules['torch'] = None
        import numpy as np
        from mtl_deploy.runtime import FewShotAdapter
        data = np.load({str(tmp_path / 'episodes.npz')!r})
        adapter = FewShotAdapter({str(tmp_path / 'adapter')!r})
        out = {{f"p{{i}}": adapter.adapt(data[f"sx{{i}}"], data[f"sy{{i}}"]).predict(data[f"q{{i}}"]) for i in range(3)}}
        np.savez({str(tmp_path / 'served.npz')!r}, **out)
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    served = np.load(tmp_path / "served.npz")
    for i, want in enumerate(expected):
        np.testing.assert_allclose(served[f"p{i}"], want, atol=1e-4, rtol=1e-4)


def test_matching_head_adapts_and_exports(tmp_path):
    torch.manual_seed(0)
    model = mtl_deploy.fewshot(Encoder(), "matching", example_inputs=torch.randn(4, 1, 8, 8), ways=3)
    support, labels, query, _ = _episode(3)
    assert mtl_deploy.adapt(model, support, labels)(query)["class"].shape == (7, 3)
    assert mtl_deploy.export(model, tmp_path / "a", format="adapter").parity.passed


def test_fewshot_refuses_what_it_cannot_adapt():
    with pytest.raises(InputError, match="unknown few-shot head"):
        mtl_deploy.fewshot(Encoder(), "knn", example_inputs=torch.randn(4, 1, 8, 8))
    with pytest.raises(InputError, match="one float tensor"):
        mtl_deploy.fewshot(Encoder(), example_inputs={"a": torch.randn(4, 1, 8, 8), "b": torch.randn(4, 2)})
    model = mtl_deploy.fewshot(Encoder(), example_inputs=torch.randn(4, 1, 8, 8), ways=3)
    with pytest.raises(InputError, match="class"):
        mtl_deploy.adapt(model, torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))  # class 2 has no example
    with pytest.raises(InputError, match="cannot save"):
        mtl_deploy.save(model, "never-written")


def _labelled_rows(seed, classes=12, per_class=10):
    """Classes that differ in where the image is bright, as in _episode, many of them."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, 1, 8, 8, generator=gen) * 2
    y = torch.arange(classes).repeat_interleave(per_class)
    return centres[y] + 0.6 * torch.randn(len(y), 1, 8, 8, generator=gen), y


@pytest.mark.parametrize("head", ["prototypes", "finetune"])
def test_meta_finetuning_trains_the_backbone_and_lowers_the_validation_loss(head):
    from mtl_deploy.data.fewshot import labelled_family
    from mtl_deploy.meta.learners import make_learner
    from mtl_deploy.meta.train import validation_loss

    torch.manual_seed(0)
    model = mtl_deploy.fewshot(Encoder(), head, example_inputs=torch.randn(4, 1, 8, 8), ways=3, steps=10, lr=0.5)
    family = labelled_family(*_labelled_rows(0), ways=3, shots=2, queries=5, split=(0.5, 0.25, 0.25), seed=0)
    learner = make_learner(dataclasses.replace(MetaConfig(), algorithm=model.adaptation["algorithm"],
                                               inner_lr=0.5, adapt_steps=10))
    before = validation_loss(model.train(), learner, family, 40, seed=1)
    frozen_conv = model.trunk.module.net[0].weight.detach().clone()
    weights = model.trunk.module.net[5].weight.detach().clone()
    fitted = mtl_deploy.meta_finetune(model, family, iterations=40, meta_batch=4, outer_lr=3e-3, val_every=10,
                                      val_tasks=40, freeze=["net.0."], progress=False)
    assert fitted.val_loss < before
    assert not torch.equal(fitted.model.trunk.module.net[5].weight, weights)  # the backbone was trained
    assert torch.equal(fitted.model.trunk.module.net[0].weight, frozen_conv)  # except what stays frozen
    assert fitted.model.trunk.freeze == ["net.0."]


def test_meta_finetuning_refuses_what_it_cannot_train():
    from mtl_deploy.data.fewshot import labelled_family

    model = mtl_deploy.fewshot(Encoder(), "prototypes", example_inputs=torch.randn(4, 1, 8, 8), ways=3)
    family = labelled_family(*_labelled_rows(0), ways=3, shots=2, queries=5, split=(0.5, 0.25, 0.25), seed=0)
    with pytest.raises(InputError, match="nothing to fine-tune"):
        mtl_deploy.meta_finetune(model, family, iterations=2, freeze=True, progress=False)
    four_way = labelled_family(*_labelled_rows(0, classes=16), ways=4, shots=2, queries=5, split=(0.5, 0.25, 0.25),
                               seed=0)
    with pytest.raises(InputError, match="4 ways"):
        mtl_deploy.meta_finetune(model, four_way, iterations=2, progress=False)
    with pytest.raises(InputError, match="few-shot model"):
        mtl_deploy.meta_finetune(torch.nn.Linear(2, 2), family, progress=False)
