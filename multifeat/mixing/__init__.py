"""Method B: projection into StyleGAN2's style space, style mixing, attribute-guided mixing and
latent directions (see ``docs/style_mixing.md``). The entry point is :class:`StyleMixer`."""

from multifeat.mixing.directions import (
    LatentDirection,
    edit_ws,
    fit_linear_boundary,
    learn_directions,
    orthogonalize,
)
from multifeat.mixing.distance import (
    LPIPSWeightsMissingError,
    PixelGradientDistance,
    VGGPerceptualDistance,
    build_distance,
)
from multifeat.mixing.guided import GuidedMixResult, candidate_masks, combine_scores, guided_search
from multifeat.mixing.layers import (
    PRESETS,
    band_resolution,
    layer_table,
    mix_ws,
    preset_layers,
    resolve_layers,
)
from multifeat.mixing.loading import as_probability_fn, load_probability_fn, load_stylegan2_generator
from multifeat.mixing.projection import ProjectionResult, project, projection_schedule
from multifeat.mixing.style_mixer import MixResult, StyleMixer

__all__ = [
    "PRESETS",
    "GuidedMixResult",
    "LPIPSWeightsMissingError",
    "LatentDirection",
    "MixResult",
    "PixelGradientDistance",
    "ProjectionResult",
    "StyleMixer",
    "VGGPerceptualDistance",
    "as_probability_fn",
    "band_resolution",
    "build_distance",
    "candidate_masks",
    "combine_scores",
    "edit_ws",
    "fit_linear_boundary",
    "guided_search",
    "layer_table",
    "learn_directions",
    "load_probability_fn",
    "load_stylegan2_generator",
    "mix_ws",
    "orthogonalize",
    "preset_layers",
    "project",
    "projection_schedule",
    "resolve_layers",
]
