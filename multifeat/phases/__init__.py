"""One LightningModule per phase (see each module's docstring)."""

from multifeat.phases.base import PhaseModule
from multifeat.phases.conditional_gan import ConditionalGAN
from multifeat.phases.feature_classifier import FeatureClassifier
from multifeat.phases.gan import GANModule
from multifeat.phases.phase1 import Phase1GAN
from multifeat.phases.phase3 import Phase3GAN
from multifeat.phases.stylegan2ada import StyleGAN2ADA

__all__ = [
    "ConditionalGAN",
    "FeatureClassifier",
    "GANModule",
    "Phase1GAN",
    "Phase3GAN",
    "PhaseModule",
    "StyleGAN2ADA",
]
