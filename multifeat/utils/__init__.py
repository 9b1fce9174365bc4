"""Small shared helpers: atomic file writes, image conversion and grids."""

from multifeat.utils.files import (
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    ensure_writable_dir,
)
from multifeat.utils.images import make_grid, save_grid, save_image, to_uint8

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_torch_save",
    "ensure_writable_dir",
    "make_grid",
    "save_grid",
    "save_image",
    "to_uint8",
]
