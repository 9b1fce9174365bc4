"""StyleGAN2(-ADA) in plain PyTorch: networks equivalent to the official ones, and their ops.

See ``docs/stylegan2.md``. Official network pickles are read by ``multifeat.io.official_pickle``.
"""

from multifeat.nets.stylegan2 import ops
from multifeat.nets.stylegan2.networks import (
    Discriminator,
    DiscriminatorBlock,
    DiscriminatorEpilogue,
    Generator,
    MappingNetwork,
    MinibatchStdLayer,
    SynthesisBlock,
    SynthesisLayer,
    SynthesisNetwork,
    ToRGBLayer,
)

__all__ = [
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
    "ops",
]
