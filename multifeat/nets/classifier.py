"""Convolutional image classifier used for D2 (one output) and for the attribute evaluator
(one output per attribute). Returns logits; apply ``torch.sigmoid`` for probabilities.

Shapes: x [N, 3, S, S] in [-1, 1] -> logits [N, num_outputs]; ``features(x)`` -> [N, feature_dim]
(global-average-pooled last stage, also usable as an embedding for FID/KID when no Inception
weights are available).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from multifeat.nets.dcgan import check_image_size, norm_layer


class ConvClassifier(nn.Module):
    """Stride-2 conv stages down to 4x4, then global average pooling and a linear head.

    Args:
        image_size: input side, power of two in [16, 256].
        num_outputs: number of logits (1 for D2, number of attributes for the evaluator).
        width: channels of the first stage, doubling per stage up to ``max_width``.
        max_width: channel cap.
        norm: ``batch``, ``instance`` or ``none``.
        dropout: dropout before the head.
    """

    def __init__(
        self,
        image_size: int = 64,
        num_outputs: int = 1,
        width: int = 32,
        max_width: int = 256,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_image_size(image_size)
        self.image_size, self.num_outputs = image_size, num_outputs
        n_down = int(math.log2(image_size)) - 2
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(n_down):
            c_out = int(min(max_width, width * 2**i))
            layers += [
                nn.Conv2d(c_in, c_out, 3, 1, 1, bias=norm == "none"),
                norm_layer(norm, c_out),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(c_out, c_out, 4, 2, 1, bias=norm == "none"),
                norm_layer(norm, c_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.feature_dim = c_in
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(c_in, num_outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))
