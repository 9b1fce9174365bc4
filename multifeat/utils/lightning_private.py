"""The package's only uses of Lightning internals that have no public equivalent.

Each entry names the private attribute it relies on; ``tests/test_lightning_private.py`` asserts
that every one still exists with the expected signature, so a Lightning release that renames or
removes one fails those tests loudly instead of silently changing training.

- :func:`count_optimizer_step`: advance ``trainer.global_step`` by one under manual optimisation.
  Lightning counts one global step per ``LightningOptimizer.step()`` call, through the optimizer's
  ``_on_before_step`` / ``_on_after_step`` callables that its manual-optimisation loop installs for
  the duration of a training step. A GAN makes two or more optimizer steps per batch but counts one
  (``max_steps`` and every step interval are in batches). Its optimizer steps go through the public
  :meth:`Strategy.optimizer_step <lightning.pytorch.strategies.Strategy.optimizer_step>` (which
  does not count, see :func:`multifeat.phases.gan.GANModule.optimizer_update`) and this function
  counts the batch once.
- :func:`own_hyperparameters`: LightningCLI builds the configured module inside a context variable,
  ``lightning.pytorch.core.mixins.hparams_mixin._given_hyperparameters``, that hands *its* init
  arguments to ``save_hyperparameters``. Any LightningModule constructed while it is set (Phase 3
  builds the Phase-1 and Phase-2 modules read from ``g1_ckpt`` / ``d2_ckpt``) would record Phase 3's
  arguments instead of its own (e.g. ``image_size=None`` for D2). The function clears it for the
  nested builds.
- :data:`CLI_CKPT_PATH_HOOK`: the name of the ``LightningCLI`` method that reads the hyper-parameters
  of ``--ckpt_path`` (``multifeat.cli`` overrides it to merge them into the parsed config).
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lightning.pytorch.core.mixins import hparams_mixin

#: ``LightningOptimizer`` attributes that Lightning's manual-optimisation loop sets to its
#: step-progress callbacks (no arguments) while a training step runs.
OPTIMIZER_STEP_CALLBACKS = ("_on_before_step", "_on_after_step")

#: the context variable of ``hparams_mixin`` holding LightningCLI's init arguments (or None)
GIVEN_HPARAMS = "_given_hyperparameters"

#: ``LightningCLI`` method (no arguments besides ``self``) overridden by ``multifeat.cli``.
CLI_CKPT_PATH_HOOK = "_parse_ckpt_path"


def count_optimizer_step(optimizer: Any) -> None:
    """Advance ``trainer.global_step`` by one without touching any weight.

    ``optimizer`` is one of ``LightningModule.optimizers()`` inside ``training_step``. Outside a
    trainer (a plain torch optimizer) nothing is counted.
    """
    before = getattr(optimizer, OPTIMIZER_STEP_CALLBACKS[0], None)
    after = getattr(optimizer, OPTIMIZER_STEP_CALLBACKS[1], None)
    if before is None or after is None:
        return
    before()
    after()


@contextmanager
def own_hyperparameters() -> Iterator[None]:
    """Inside the block, LightningModules built record their own init arguments as hyper-parameters
    (LightningCLI's are set aside and restored after)."""
    given = getattr(hparams_mixin, GIVEN_HPARAMS, None)
    if not isinstance(given, contextvars.ContextVar):
        raise RuntimeError(
            f"lightning.pytorch.core.mixins.hparams_mixin.{GIVEN_HPARAMS} is gone or changed in this Lightning "
            "version; multifeat.utils.lightning_private needs an update"
        )
    token = given.set(None)
    try:
        yield
    finally:
        given.reset(token)


def check_private_api() -> list[str]:
    """What of the Lightning internals above is missing or changed (empty when all is as expected)."""
    import torch
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.core.optimizer import LightningOptimizer

    problems = []
    probe = LightningOptimizer(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1))
    for name in OPTIMIZER_STEP_CALLBACKS:
        fn = getattr(probe, name, None)
        if not callable(fn):
            problems.append(f"LightningOptimizer.{name} is missing")
        elif inspect.signature(fn).parameters:
            problems.append(f"LightningOptimizer.{name} now takes arguments {inspect.signature(fn)}")
    if not isinstance(getattr(hparams_mixin, GIVEN_HPARAMS, None), contextvars.ContextVar):
        problems.append(f"hparams_mixin.{GIVEN_HPARAMS} is not a ContextVar any more")
    hook = getattr(LightningCLI, CLI_CKPT_PATH_HOOK, None)
    if not callable(hook):
        problems.append(f"LightningCLI.{CLI_CKPT_PATH_HOOK} is missing")
    elif list(inspect.signature(hook).parameters) != ["self"]:
        problems.append(f"LightningCLI.{CLI_CKPT_PATH_HOOK} signature changed to {inspect.signature(hook)}")
    return problems
