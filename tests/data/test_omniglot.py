"""The Omniglot family: read_image on the shipped drawings, characters combined across
sources without repeats, class splits disjoint by alphabet, and refused input."""

import zipfile

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mtl_deploy.cli import app
from mtl_deploy.data.omniglot import combine, omniglot_family, read_image, read_sources
from mtl_deploy.errors import InputError
from tests.omniglot_data import OMNIGLOT, needs_omniglot

pytestmark = needs_omniglot
FIRST = "images_background_small1/Balinese/character01/0108_01.png"


def test_read_image_on_a_shipped_drawing(tmp_path):
    png = zipfile.ZipFile(OMNIGLOT / "images_background_small1.zip").read(FIRST)
    image = read_image(png, 28)
    assert image.shape == (1, 28, 28) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert image[0, 0, 0] == 0.0 and image.max() > 0.9  # background 0, ink 1
    assert 0.02 < image.mean() < 0.4  # strokes, not a filled square
    assert len(np.unique(image)) > 10  # antialiased: grey edges, not a binary image
    (tmp_path / "a.png").write_bytes(png)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png", 28), image)
    full = read_image(png, 105)  # no resize: exactly the drawing's pixels
    assert set(np.unique(full)) == {0.0, 1.0}


def test_sources_combine_without_repeated_characters():
    characters = combine(read_sources(OMNIGLOT))
    assert len(characters.keys) == len(set(characters.keys)) == 242  # 136 + 156 - 50 shared
    assert {a for a, _ in characters.keys} == {"Balinese", "Early_Aramaic", "Greek", "Korean", "Latin",
                                               "Japanese_(katakana)", "Sanskrit", "Tagalog"}
    assert all(len(drawings) == 20 for drawings in characters.images)


def test_splits_are_disjoint_by_alphabet():
    family = omniglot_family(OMNIGLOT, 20, 1, 5, (0.75, 0.25, 0.0), 28, rotations=True, seed=0)
    characters = combine(read_sources(OMNIGLOT))
    alphabets = {name: {characters.keys[c // 4][0] for c in sampler.episodes.classes}
                 for name, sampler in family.samplers.items()}
    assert set(alphabets) == {"train", "val"}  # no evaluation source, no test share
    assert len(alphabets["train"]) == 6 and len(alphabets["val"]) == 2
    assert not alphabets["train"] & alphabets["val"]
    classes = [set(s.episodes.classes) for s in family.samplers.values()]
    assert sum(map(len, classes)) == 4 * 242 and not classes[0] & classes[1]
    episode = family.samplers["train"].sample(2, torch.Generator().manual_seed(0))
    assert episode.support_x.shape == (2, 20, 1, 28, 28) and family.transform["rotations"] is True


def test_rotations_are_quarter_turns_of_the_same_drawing():
    family = omniglot_family(OMNIGLOT / "images_background_small1.zip", 5, 1, 1, (0.8, 0.2, 0.0), 28, True, 0)
    episodes = family.samplers["train"].episodes
    upright, turned = episodes.x[episodes.rows[0][0]], episodes.x[episodes.rows[1][0]]
    torch.testing.assert_close(torch.rot90(upright, 1, dims=(1, 2)), turned)


def test_an_evaluation_source_is_the_test_split(tmp_path):
    source = zipfile.ZipFile(OMNIGLOT / "images_background_small1.zip")
    with zipfile.ZipFile(tmp_path / "images_evaluation.zip", "w") as out:
        for name in source.namelist():
            if name.startswith("images_background_small1/Korean/") and name.endswith(".png"):
                out.writestr(name.replace("images_background_small1", "images_evaluation"), source.read(name))
    (tmp_path / "images_background_small2.zip").symlink_to(OMNIGLOT / "images_background_small2.zip")
    family = omniglot_family(tmp_path, 5, 1, 1, (0.6, 0.2, 0.2), 28, False, 0)
    assert len(family.samplers["test"].episodes.classes) == 40  # Korean's characters


@pytest.mark.parametrize("entries", [{"a.png": b"x"}, {"notes.txt": b"x"}])
def test_a_zip_that_is_not_omniglot_shaped_is_refused(tmp_path, entries):
    data = tmp_path / "data"
    data.mkdir()
    with zipfile.ZipFile(data / "images_background.zip", "w") as archive:
        for name, value in entries.items():
            archive.writestr(name, value)
    with pytest.raises(InputError, match="not an Omniglot image set"):
        read_sources(data / "images_background.zip")
    result = CliRunner().invoke(app, ["train", "--preset", "omniglot-protonet", "--data", str(data),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "not an Omniglot image set" in result.output and not (tmp_path / "out").exists()
