"""Bring your own model: a BERT text encoder (your factory, in my_networks.py) with three
task heads, trained from a torch Dataset, saved, loaded only because its package is trusted,
exported to ONNX with proved parity, and served from token ids with ONNX Runtime.
Usage: python examples/own_model.py [OUT_DIR]"""

import sys
from pathlib import Path

import numpy as np
import torch

import mtl_deploy
import mtl_deploy.mtl
from mtl_deploy import TaskSpec
from mtl_deploy.config import TrainConfig
from mtl_deploy.runtime import Predictor
from my_networks import text_encoder

out = Path(sys.argv[1] if len(sys.argv) > 1 else "own-model-out")
tasks = [TaskSpec("length", "regression"), TaskSpec("topic", "multiclass", 4), TaskSpec("question", "binary")]


class Reviews(torch.utils.data.Dataset):
    """Token ids (tokenize outside the model, e.g. with a transformers tokenizer), padded."""

    def __init__(self, rows=96):
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, 1000, (rows, 12), generator=gen)
        self.mask = (torch.arange(12) < torch.randint(3, 13, (rows, 1), generator=gen)).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        ids, mask = self.ids[i] * self.mask[i], self.mask[i]
        return ({"input_ids": ids, "attention_mask": mask},
                {"length": mask.sum().float() / 12, "topic": int(ids[0]) % 4, "question": int(ids[1] > 500)})


torch.manual_seed(0)
example = Reviews()[0][0]
model = mtl_deploy.wrap(text_encoder(), tasks, example_inputs={k: v.repeat(2, 1) for k, v in example.items()},
                        pooling="mean", factory="my_networks:text_encoder", kwargs={})
result = mtl_deploy.mtl.train(model, Reviews(), config=TrainConfig(epochs=3, batch_size=16, lr=1e-3, backbone_lr=3e-4),
                              progress=False)
print(f"trained {result.epochs_run} epochs, validation loss {result.val_loss:.3f}")
mtl_deploy.save(model, out / "checkpoint")
loaded = mtl_deploy.load(out / "checkpoint", trust=("my_networks",))  # untrusted, it would import nothing
report = mtl_deploy.export(out / "checkpoint", out / "export", trust=("my_networks",), batch_sizes=[1, 3, 16])
print("proved on", ", ".join(report.parity.inputs), "at batches", report.parity.batch_sizes)

tokens = {"input_ids": np.array([[101, 7, 42, 0]]), "attention_mask": np.array([[1, 1, 1, 0]])}
print("served:", {task: values.round(3).tolist() for task, values in Predictor(out / "export").predict(tokens).items()})
