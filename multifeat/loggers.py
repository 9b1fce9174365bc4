"""Experiment loggers.

:class:`WandbLogger` is the default logger of every phase. It needs no account and no network: when
no W&B credentials are configured it runs offline and writes its run files under ``save_dir``
(sync them later with ``wandb sync <save_dir>/wandb/offline-run-*``). It goes online when the user is
logged in (``wandb login``, ``WANDB_API_KEY``) or sets ``WANDB_MODE=online``. ``WANDB_MODE`` always
wins (``offline``, ``online``, ``disabled``).

Switch to CSV files with ``--trainer.logger=CSVLogger`` (or ``logger: csv`` in a pipeline config).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger


def wandb_mode(offline: bool | None = None) -> str:
    """Decide the W&B mode: ``WANDB_MODE`` if set, else online only when credentials exist."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in {"offline", "online", "disabled", "dryrun", "run"}:
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    if offline is not None:
        return "offline" if offline else "online"
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        if "api.wandb.ai" in netrc.read_text():
            return "online"
    except OSError:
        pass
    return "offline"


class WandbLogger(_LightningWandbLogger):
    """Lightning's W&B logger, offline unless credentials are configured (see module docstring).

    Args:
        project: W&B project; runs to compare side by side belong in one project.
        name: run name (default: W&B picks one).
        group: groups the phases of one pipeline run in W&B's compare view.
        job_type: the phase (``phase1``, ``phase2``, ``phase3``, ``eval``, ...).
        save_dir: where run files go (``<save_dir>/wandb/...``).
        offline: force offline (True) or online (False); None decides from the environment.
        tags: free-form tags.
        log_model: upload checkpoints as W&B artifacts (off by default).
    """

    def __init__(
        self,
        project: str = "multifeat",
        name: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        save_dir: str = "runs",
        offline: bool | None = None,
        tags: list[str] | None = None,
        log_model: bool = False,
        **kwargs: Any,
    ) -> None:
        mode = wandb_mode(offline)
        # W&B's service process resolves relative paths against the folder it was started in,
        # which need not be the current one (a notebook or a program that changed directory)
        save_dir = str(Path(save_dir).expanduser().resolve())
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("settings", None)
        if kwargs["settings"] is None:
            kwargs.pop("settings")
        super().__init__(
            project=project,
            name=name,
            save_dir=save_dir,
            offline=(mode == "offline"),
            log_model=log_model,
            group=group,
            job_type=job_type,
            tags=tags,
            mode=mode,
            **kwargs,
        )


def build_logger(kind: str, save_dir: str, **kwargs: Any):
    """Logger by short name: ``wandb`` (default), ``csv`` or ``none``."""
    kind = (kind or "wandb").lower()
    if kind == "wandb":
        return WandbLogger(save_dir=save_dir, **kwargs)
    if kind == "csv":
        return CSVLogger(save_dir=save_dir, name=kwargs.get("name") or "csv")
    if kind in {"none", "false", "off"}:
        return False
    raise ValueError(f"unknown logger '{kind}': expected one of wandb, csv, none")


__all__ = ["WandbLogger", "CSVLogger", "build_logger", "wandb_mode"]
