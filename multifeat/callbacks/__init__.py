"""Training callbacks: sample grids (any generator) and Phase 1's negative bank."""

from multifeat.callbacks.negative_bank import NegativeBank
from multifeat.callbacks.sample_grid import SampleGrid

__all__ = ["NegativeBank", "SampleGrid"]
