"""Training callbacks: sample grids (any generator), Phase 1's negative bank, exact-resume RNG
state (attached to every phase automatically) and opt-in ``torch.compile``."""

from multifeat.callbacks.negative_bank import NegativeBank
from multifeat.callbacks.rng_state import RNGState
from multifeat.callbacks.sample_grid import SampleGrid
from multifeat.callbacks.torch_compile import TorchCompile

__all__ = ["NegativeBank", "RNGState", "SampleGrid", "TorchCompile"]
