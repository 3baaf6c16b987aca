"""Images listed in a CSV, one column per task: `file,age,smiling` rows with the image
paths relative to the CSV. Read lazily, one image per item, so the data need not fit in
memory; items are `(image, {task: target})`, as `mtl_deploy.mtl.train` reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mtl_deploy.data.tasks import TaskSpec
from mtl_deploy.errors import InputError
from mtl_deploy.runtime.csv_reader import read_table

MODES = {"L": 1, "RGB": 3}  # grayscale or colour, and their channel counts


class ImageTable(torch.utils.data.Dataset):
    """`csv` with an `image_column` of file paths and one numeric column per task; each
    image is converted to `mode`, resized to `size` (height, width) and scaled to [0, 1]:
    (C, H, W) float32."""

    def __init__(self, csv: str | Path, tasks: list[TaskSpec], *, size: tuple[int, int] = (32, 32),
                 mode: str = "RGB", image_column: str = "file"):
        if mode not in MODES:
            raise InputError(f"unknown image mode {mode!r}; use one of {', '.join(MODES)}")
        table = read_table(csv, header=True)
        names = [t.name for t in tasks]
        missing = [c for c in [image_column, *names] if c not in table.header]
        if missing:
            raise InputError(f"{csv}: no column(s) {missing}; the header has {table.header}")
        self.root, self.tasks, self.size, self.mode = Path(csv).parent, list(tasks), tuple(size), mode
        column = table.header.index(image_column)
        self.files = [row[column] for row in table.rows]
        absent = [f for f in self.files if not (self.root / f).is_file()]
        if absent:
            raise InputError(f"{csv}: {len(absent)} image file(s) do not exist, first {absent[0]!r}")
        values = table.numbers([table.header.index(n) for n in names])
        self.targets = {t.name: t.prepare_target(torch.from_numpy(values[:, j])) for j, t in enumerate(tasks)}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image, UnidentifiedImageError

        path = self.root / self.files[i]
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert(self.mode).resize(self.size[::-1]), dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as err:
            raise InputError(f"{path} is not a readable image ({str(err)[:120]})") from None
        image = torch.from_numpy(pixels).reshape(*self.size, MODES[self.mode]).permute(2, 0, 1).contiguous()
        return image, {name: values[i] for name, values in self.targets.items()}
