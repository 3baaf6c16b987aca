"""Images listed in a CSV with one column per task, read lazily and trained on."""

import numpy as np
import pytest
import torch
from PIL import Image

import mtl_deploy
import mtl_deploy.mtl
from mtl_deploy import TaskSpec
from mtl_deploy.config import TrainConfig
from mtl_deploy.data.image_table import ImageTable
from mtl_deploy.errors import InputError

TASKS = [TaskSpec("brightness", "regression"), TaskSpec("red", "binary")]


def _folder(tmp_path, rows=12):
    rng = np.random.default_rng(0)
    lines = ["file,brightness,red"]
    for i in range(rows):
        colour = rng.integers(0, 256, 3)
        Image.fromarray(np.full((10, 14, 3), colour, np.uint8)).save(tmp_path / f"im{i}.png")
        lines.append(f"im{i}.png,{colour.mean() / 255:.4f},{int(colour[0] > 128)}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "labels.csv"


def test_images_are_read_lazily_and_train_a_wrapped_network(tmp_path):
    data = ImageTable(_folder(tmp_path), TASKS, size=(8, 8))
    image, targets = data[3]
    assert image.shape == (3, 8, 8) and 0 <= float(image.min()) and float(image.max()) <= 1
    assert abs(float(targets["brightness"].reshape(())) - float(image.mean())) < 0.01
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten())
    model = mtl_deploy.wrap(net, TASKS, example_inputs=torch.stack([data[0][0], data[1][0]]))
    result = mtl_deploy.mtl.train(model, data, config=TrainConfig(epochs=2, batch_size=4), progress=False)
    assert result.epochs_run == 2 and np.isfinite(result.val_loss)


def test_a_bad_image_table_is_one_line(tmp_path):
    csv = _folder(tmp_path, rows=3)
    with pytest.raises(InputError, match="no column"):
        ImageTable(csv, [TaskSpec("age", "regression")])
    (tmp_path / "im1.png").unlink()
    with pytest.raises(InputError, match="do not exist, first 'im1.png'"):
        ImageTable(csv, TASKS)
    (tmp_path / "im1.png").write_text("not an image")
    with pytest.raises(InputError, match="not a readable image"):
        ImageTable(csv, TASKS)[1]
