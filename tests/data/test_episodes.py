"""N-way K-shot sampling, class splits and the built-in few-shot families."""

import numpy as np
import pytest
import torch

from mtl_deploy.data.episodes import ClassEpisodes, split_classes
from mtl_deploy.data.fewshot import SinusoidTasks, fewshot_family, load_image_folder
from mtl_deploy.errors import InputError


def test_episodes_have_the_asked_shape_and_relabelled_classes():
    x = torch.arange(60.0).reshape(60, 1)
    y = torch.arange(60) // 10  # 6 classes of 10
    episodes = ClassEpisodes(x, y).sample(4, ways=3, shots=2, queries=5, generator=torch.Generator().manual_seed(0))
    assert episodes.support_x.shape == (4, 6, 1) and episodes.query_x.shape == (4, 15, 1)
    assert episodes.support_y[0].tolist() == [0, 0, 1, 1, 2, 2]
    for t in range(4):  # each label maps to one original class, and support and query never share a row
        original = (episodes.support_x[t, :, 0] // 10).long()
        for label in range(3):
            assert len(set(original[episodes.support_y[t] == label].tolist())) == 1
        assert not set(episodes.support_x[t, :, 0].tolist()) & set(episodes.query_x[t, :, 0].tolist())


def test_too_few_examples_or_classes_are_refused():
    x, y = torch.zeros(12, 2), torch.arange(12) // 4  # 3 classes of 4
    sampler = ClassEpisodes(x, y)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(InputError, match="need 5 examples; the smallest class here has 4"):
        sampler.sample(1, ways=2, shots=3, queries=2, generator=gen)
    with pytest.raises(InputError, match="5-way episodes need 5 classes; this split has 3"):
        sampler.sample(1, ways=5, shots=1, queries=1, generator=gen)


def test_class_splits_are_disjoint_and_cover_everything():
    train, val, test = split_classes(list(range(20)), (0.6, 0.2, 0.2), seed=3)
    assert (len(train), len(val), len(test)) == (12, 4, 4)
    assert sorted(train + val + test) == list(range(20))
    with pytest.raises(InputError, match="sum to 1"):
        split_classes(list(range(5)), (0.5, 0.5, 0.5), seed=0)


def test_sinusoid_follows_the_maml_paper():
    episodes = SinusoidTasks(shots=10, queries=5).sample(500, torch.Generator().manual_seed(0))
    x = torch.cat([episodes.support_x, episodes.query_x], 1)
    y = torch.cat([episodes.support_y, episodes.query_y], 1)
    assert x.min() >= -5 and x.max() <= 5
    assert y.abs().max() <= 5 and y.abs().amax(dim=(1, 2)).min() < 0.5  # amplitudes span [0.1, 5]


def test_digits_splits_are_disjoint_digits():
    family = fewshot_family("digits", ways=5, shots=1, queries=2)
    train, val, test = (family.samplers[s].episodes.classes for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (32, 8, 40)  # digits 0-3, 4 and 5-9 in eight orientations each
    assert {c % 10 for c in train} == {0, 1, 2, 3} and {c % 10 for c in val} == {4}
    assert {c % 10 for c in test} == {5, 6, 7, 8, 9}
    assert len(family.train_rows) == sum(len(r) for r in family.samplers["train"].episodes.rows.values())


def test_translated_digits_keep_every_pixel_at_fixed_random_offsets():
    plain = fewshot_family("digits", ways=5, shots=1, queries=2)
    moved = fewshot_family("digits", ways=5, shots=1, queries=2, translate=3)
    assert moved.input_shape == (1, 11, 11) and moved.train_rows.shape[1:] == (1, 11, 11)
    x, x0 = moved.samplers["test"].episodes.x, plain.samplers["test"].episodes.x
    assert torch.equal(x.sum((1, 2, 3)), x0.sum((1, 2, 3)))  # each digit whole, nothing cropped
    top = (x.sum((1, 3)) > 0).float().argmax(1) - (x0.sum((1, 3)) > 0).float().argmax(1)  # first inked row, moved - plain
    assert top.min() >= 0 and top.max() == 3 and len(top.unique()) == 4  # offsets cover 0..3
    again = fewshot_family("digits", ways=5, shots=1, queries=2, translate=3, seed=9)
    assert torch.equal(again.samplers["test"].episodes.x, x)  # the data do not depend on the run's seed
    with pytest.raises(InputError, match="digits family only"):
        fewshot_family("sinusoid", ways=5, shots=1, queries=2, translate=2)


def test_npz_and_image_folder_families(tmp_path):
    from PIL import Image

    np.savez(tmp_path / "d.npz", x=np.random.rand(50, 4), y=np.repeat(np.arange(10), 5))
    family = fewshot_family("npz", ways=2, shots=2, queries=1, path=str(tmp_path / "d.npz"))
    parts = [set(family.samplers[s].episodes.classes) for s in ("train", "val", "test")]
    assert parts[0].isdisjoint(parts[1]) and parts[1].isdisjoint(parts[2]) and len(set().union(*parts)) == 10
    for label in range(3):
        (tmp_path / "imgs" / f"class{label}").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((5, 5), 40 * label + i, dtype=np.uint8)).save(tmp_path / "imgs" / f"class{label}" / f"{i}.png")
    x, y = load_image_folder(tmp_path / "imgs", image_size=4)
    assert x.shape == (6, 1, 4, 4) and y.tolist() == [0, 0, 1, 1, 2, 2]
    (tmp_path / "imgs" / "class0" / "broken.png").write_bytes(b"nope")
    with pytest.raises(InputError, match="not a readable image"):
        load_image_folder(tmp_path / "imgs", image_size=4)
    with pytest.raises(InputError, match="unknown few-shot family"):
        fewshot_family("imagenet", ways=2, shots=1, queries=1)
