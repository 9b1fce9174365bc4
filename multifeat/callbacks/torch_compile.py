"""Opt-in ``torch.compile`` for any phase, as a callback (no module changes needed).

    trainer:
      callbacks:
        - class_path: multifeat.callbacks.TorchCompile
          init_args: {modules: [generator, discriminator], mode: null}

At ``setup`` it compiles the named sub-modules of the LightningModule **in place**
(``nn.Module.compile``), so parameter names, checkpoints and resume are unchanged. Measured effect
(``benchmarks/bench_phase1_flops.py --compile``, 2-core CPU): a Phase-1 step 14 % faster after about
a minute of compiling; worth it for long runs only. Names that the module lacks are an error.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from multifeat.errors import ConfigError


class TorchCompile(Callback):
    """Compile sub-modules of the phase in place at setup.

    Args:
        modules: attribute names of the sub-modules to compile (default: generator and
            discriminator, the networks every GAN phase has).
        mode: ``torch.compile`` mode (``None``, ``"reduce-overhead"``, ``"max-autotune"``).
        dynamic: ``torch.compile``'s ``dynamic`` flag.
    """

    def __init__(self, modules: list[str] | None = None, mode: str | None = None, dynamic: bool | None = None) -> None:
        self.modules = list(modules) if modules is not None else ["generator", "discriminator"]
        self.kwargs: dict[str, Any] = {"mode": mode, "dynamic": dynamic}
        self.compiled: list[str] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for name in self.modules:
            if name in self.compiled:
                continue
            sub = getattr(pl_module, name, None)
            if not isinstance(sub, nn.Module):
                have = sorted(n for n, m in pl_module.named_children())
                raise ConfigError(
                    f"TorchCompile: {type(pl_module).__name__} has no sub-module '{name}'; it has {', '.join(have)}"
                )
            sub.compile(**self.kwargs)
            self.compiled.append(name)
