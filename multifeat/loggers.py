"""Experiment loggers.

:class:`WandbLogger` is the default logger of every phase. It needs no account and no network: when
no W&B credentials are configured it runs offline and writes its run files under ``save_dir``
(sync them later with ``wandb sync <save_dir>/wandb/offline-run-*``). It goes online when the user is
logged in (``wandb login``, ``WANDB_API_KEY``) or sets ``WANDB_MODE=online``. ``WANDB_MODE`` always
wins (``offline``, ``online``, ``disabled``).

Switch to CSV files with ``--trainer.logger=CSVLogger`` (or ``logger: csv`` in a pipeline config).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
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


# ------------------------------------------------------------------------------------ console
#: Warnings that say nothing a user of the package can act on; :class:`QuietConsole` keeps them in the
#: log file even where it would show a warning on the console.
UNACTIONABLE_WARNINGS = (
    r".*LeafSpec.*",
    r".*val_dataloader.*validation_step.*",
    r".*module\(s\) in eval mode.*",
    r".*does not have many workers.*",
    r".*The number of training batches.*is smaller than the logging interval.*",
    r".*will override existing callbacks passed to Trainer.*",
)

_LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "wandb")


class QuietConsole:
    """Keep the console for the few lines a user needs; everything else goes to a log file.

    Inside ``with QuietConsole(log_path) as console:``

    - ``console.line(text)`` prints a line on the real console (and copies it into the log);
    - ``console.stream`` is the real console stream (for a progress bar), ``console.isatty`` says
      whether it is a terminal;
    - standard output and standard error of the process (Lightning's messages and tips, W&B's banner
      and run summary, any ``print``) go to the log file, as do the records of Lightning's and
      W&B's ``logging`` loggers;
    - a warning goes to the log file; it is also shown on the console (one line) when it comes from
      this package (something the user can change), unless it matches :data:`UNACTIONABLE_WARNINGS`.

    ``verbose=True`` changes nothing: the console shows everything, ``console.line`` prints there
    (and the log file gets the lines only).
    """

    def __init__(self, log_path: str | os.PathLike | None, verbose: bool = False) -> None:
        self.log_path = Path(log_path) if log_path is not None else None
        self.verbose = bool(verbose)
        self.stream = sys.stdout
        self.isatty = bool(getattr(sys.stdout, "isatty", lambda: False)())
        self._log = None
        self._saved: dict[str, Any] = {}

    def line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
        if self._log is not None and not self.verbose:
            print(text, file=self._log, flush=True)

    def write_log(self, text: str) -> None:
        """A line for the log file only (the console too with ``verbose``)."""
        if self.verbose:
            print(text, file=self.stream, flush=True)
        elif self._log is not None:
            print(text, file=self._log, flush=True)

    def _showwarning(self, message, category, filename, lineno, file=None, line=None):
        text = warnings.formatwarning(message, category, filename, lineno, line)
        if self._log is not None:
            self._log.write(text)
            self._log.flush()
        ours = str(filename).startswith(str(Path(__file__).resolve().parent))
        if ours and not any(re.match(p, str(message), re.S) for p in UNACTIONABLE_WARNINGS):
            print(f"warning: {str(message).strip().splitlines()[0]}", file=self.stream, flush=True)

    def __enter__(self) -> QuietConsole:
        self.stream = sys.stdout
        self.isatty = bool(getattr(sys.stdout, "isatty", lambda: False)())
        if self.log_path is None or self.verbose:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
        self._saved = {"stdout": sys.stdout, "stderr": sys.stderr, "showwarning": warnings.showwarning,
                       "handlers": [], "env": {k: os.environ.get(k) for k in ("WANDB_SILENT", "WANDB_CONSOLE")}}
        for name in _LIBRARY_LOGGERS:
            for h in logging.getLogger(name).handlers:
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                    self._saved["handlers"].append((h, h.setStream(self._log)))
        # W&B would wrap the (redirected) streams to copy them into its run: not needed, the log has them
        os.environ.setdefault("WANDB_CONSOLE", "off")
        sys.stdout = self._log
        sys.stderr = self._log
        warnings.showwarning = self._showwarning
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._log is None:
            return
        sys.stdout = self._saved["stdout"]
        sys.stderr = self._saved["stderr"]
        warnings.showwarning = self._saved["showwarning"]
        for h, old in self._saved["handlers"]:
            h.setStream(old)
        for k, v in self._saved["env"].items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._log.close()
        self._log = None


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


__all__ = ["CSVLogger", "QuietConsole", "UNACTIONABLE_WARNINGS", "WandbLogger", "build_logger", "wandb_mode"]
