"""Your own networks, as any project has them: mtl_deploy imports this module only when you
trust it (`trust=("my_networks",)`, `--trust my_networks`)."""

from torch import nn
from transformers import BertConfig, BertModel


def text_encoder(layers: int = 2, hidden: int = 64) -> BertModel:
    """A small BERT. With a real checkpoint directory this would be
    `BertModel.from_pretrained(path)`; here it is built from a config, so nothing is downloaded."""
    return BertModel(BertConfig(vocab_size=1000, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                                intermediate_size=4 * hidden, max_position_embeddings=128))


class ImageEncoder(nn.Module):
    """A small convolutional encoder standing in for a pretrained image backbone."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten())

    def forward(self, x):
        return self.net(x)
