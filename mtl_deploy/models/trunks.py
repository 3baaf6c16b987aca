"""Shared trunks: an MLP for feature vectors and a small ConvNet for image-shaped input.

Each trunk is rebuilt from a plain dict (`config()` / `from_config`) so a checkpoint can
restore it without unpickling code.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mtl_deploy.models.module_trunk import trunk_from_config

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}
TRUNK_TYPES = ("mlp", "conv", "module", "transformers")
CONV_NORMS = ("batch", "none")  # BatchNorm after each convolution, or none


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; use one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLPTrunk(nn.Module):
    """Linear layers with an activation after each: (B, in_features) -> (B, hidden[-1])."""

    def __init__(self, in_features: int, hidden: list[int], activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        if not hidden:
            raise ValueError("an MLP trunk needs at least one hidden layer")
        self.in_features, self.hidden, self.activation, self.dropout = in_features, list(hidden), activation, dropout
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), make_activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        self.layers = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))

    def config(self) -> dict:
        return {"type": "mlp", "in_features": self.in_features, "hidden": self.hidden,
                "activation": self.activation, "dropout": self.dropout}


class ConvTrunk(nn.Module):
    """Conv(3x3) -> BatchNorm (norm "batch"; "none" leaves it out) -> ReLU -> MaxPool blocks, then flattened:
    (B, C, H, W) -> (B, channels[-1] * H' * W'), the ConvNet of the MAML/ProtoNet literature.
    Flattening keeps where a stroke is, which tells a digit from its rotations; global
    average pooling would throw that away."""

    def __init__(self, in_channels: int, channels: list[int], image_size: tuple[int, int], norm: str = "batch"):
        super().__init__()
        if not channels:
            raise ValueError("a ConvNet trunk needs at least one block")
        if norm not in CONV_NORMS:
            raise ValueError(f"unknown conv norm {norm!r}; use one of {', '.join(CONV_NORMS)}")
        self.in_channels, self.channels, self.image_size, self.norm = in_channels, list(channels), tuple(image_size), norm
        blocks: list[nn.Module] = []
        width = in_channels
        for size in channels:
            blocks += [nn.Conv2d(width, size, 3, padding=1), *([nn.BatchNorm2d(size)] if norm == "batch" else []),
                       nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            width = size
        self.blocks = nn.Sequential(*blocks)
        height, width_px = self.image_size
        for _ in channels:  # each ceil-mode 2x2 pool halves the map, rounding up
            height, width_px = -(-height // 2), -(-width_px // 2)
        self.out_features = width * height * width_px

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).flatten(1)

    def config(self) -> dict:
        return {"type": "conv", "in_channels": self.in_channels, "channels": self.channels, "norm": self.norm}


def build_trunk(config: dict, input_shape: tuple[int, ...]) -> nn.Module:
    """A trunk from its config dict; the input size comes from `input_shape`."""
    kind = config.get("type", "mlp")
    if kind == "mlp":
        return MLPTrunk(math.prod(input_shape), list(config.get("hidden", [64, 64])),
                        config.get("activation", "relu"), float(config.get("dropout", 0.0)))
    if kind == "conv":
        if len(input_shape) != 3:
            raise ValueError(f"a conv trunk takes (channels, height, width) input, got input shape {input_shape}")
        return ConvTrunk(input_shape[0], list(config.get("channels", [32, 32, 32])), input_shape[1:],
                         config.get("norm", "batch"))
    if kind in ("module", "transformers"):
        return trunk_from_config(config)
    raise ValueError(f"unknown trunk type {kind!r}; use one of {', '.join(TRUNK_TYPES)}")
