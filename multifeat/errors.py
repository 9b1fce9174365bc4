"""User-facing errors. The CLI prints their message (no traceback) and exits non-zero.

Every message names what is wrong (file, key or value) and says what is expected.
"""


class MultifeatError(Exception):
    """Base class of errors caused by user input rather than by a bug."""


class ConfigError(MultifeatError, ValueError):
    """A configuration value is invalid (wrong type, range or combination)."""


class DataError(MultifeatError, ValueError):
    """A dataset, folder, image or label file cannot be used."""


class CheckpointError(MultifeatError, ValueError):
    """A checkpoint is missing, unreadable, or of the wrong kind/shape."""


class UnsafePickleError(CheckpointError):
    """A pickle references something outside the allow-list; it was refused and nothing ran."""


class NonFiniteLossError(MultifeatError, FloatingPointError):
    """A loss became NaN/Inf during training."""
