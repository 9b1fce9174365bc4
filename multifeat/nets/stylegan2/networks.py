"""StyleGAN2(-ADA) networks: one import point and the name -> class table used by the loaders.

``Generator`` / ``MappingNetwork`` / ``SynthesisNetwork`` live in ``generator.py``, ``Discriminator``
in ``discriminator.py``, the shared low-level operations in ``ops.py``.
"""

from __future__ import annotations

from torch import nn

from multifeat.nets.stylegan2.discriminator import (
    Discriminator,
    DiscriminatorBlock,
    DiscriminatorEpilogue,
    MinibatchStdLayer,
)
from multifeat.nets.stylegan2.generator import (
    Generator,
    MappingNetwork,
    SynthesisBlock,
    SynthesisLayer,
    SynthesisNetwork,
    ToRGBLayer,
)

__all__ = [
    "OFFICIAL_TOP_LEVEL_CLASSES",
    "Discriminator",
    "DiscriminatorBlock",
    "DiscriminatorEpilogue",
    "Generator",
    "MappingNetwork",
    "MinibatchStdLayer",
    "SynthesisBlock",
    "SynthesisLayer",
    "SynthesisNetwork",
    "ToRGBLayer",
]

#: Official top-level network class names (``training.networks.<name>``) -> this package's class,
#: built with the same constructor arguments.
OFFICIAL_TOP_LEVEL_CLASSES: dict[str, type[nn.Module]] = {
    "Generator": Generator,
    "Discriminator": Discriminator,
}
