"""``AtomicCheckpointIO``: Lightning checkpoints written so that a crash never corrupts them.

Lightning's default writer (``TorchCheckpointIO``) serialises to memory and writes through an
fsspec transaction. On a local disk that transaction writes a temporary file in the *system*
temporary folder and then moves it into place: when that folder is on another file system (a
tmpfs ``/tmp``, a node-local scratch disk) the move is a copy, and a kill during the copy leaves a
half-written ``last.ckpt``; nothing is fsynced either. This plug-in writes local checkpoints with
:func:`multifeat.utils.files.atomic_write_bytes`: a temporary file *beside* the target, fsync, an
atomic ``os.replace`` and an fsync of the folder. A SIGKILL at any moment leaves either the
previous checkpoint or the new one, complete. Remote URLs (``s3://`` ...) go to Lightning's writer.

The ``multifeat``/``lightning`` command uses it by default (``trainer.plugins``); in Python::

    Trainer(plugins=[AtomicCheckpointIO()])
"""

from __future__ import annotations

import io
import os
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from multifeat.utils.files import atomic_write_bytes


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are atomic and durable (loading is unchanged)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options=storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options for local files")
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        atomic_write_bytes(os.fspath(path), buf.getvalue())
