"""Method B's StyleMixer lives in :mod:`multifeat.mixing`; it is not a training phase (it optimises
latents of a trained, frozen generator), but is listed here so the phase list is complete."""

from multifeat.mixing.style_mixer import MixResult, StyleMixer

__all__ = ["MixResult", "StyleMixer"]
