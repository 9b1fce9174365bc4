"""SwitchingDataModule: Phase 3's training data, feature-2 images first, feature-1 images later.

The paper trains Phase 3 on the **beard** (feature 2) dataset for epochs ≤ 500 and on the **bald**
(feature 1) dataset after that. This module holds two :class:`AttributeDataModule` s that differ only
in their ``require`` filter and serves the ``before`` one while ``trainer.current_epoch <
switch_epoch`` and the ``after`` one from ``switch_epoch`` on (epochs counted from 0, as Lightning
does: with ``switch_epoch=500`` the first 500 epochs see feature-2 images).

The train loader is chosen when Lightning asks for it, so the Trainer must ask every epoch:
**``reload_dataloaders_every_n_epochs: 1`` is required** whenever the switch falls inside the run
(the module raises a :class:`ConfigError` saying so otherwise). A resumed run asks at its first
epoch and so gets the right dataset.

``switch_epoch=None`` (default) takes the epoch from the LightningModule being trained: its
``data_switch_epoch`` attribute (:class:`~multifeat.phases.phase3.Phase3GAN` exposes its
``switch_epoch``), so the schedule is written once, in the model config::

    data:
      class_path: multifeat.data.switching.SwitchingDataModule
      init_args:
        before: {beard: true, bald: false}   # feature 2
        after: {bald: true, beard: false}    # feature 1
        image_size: 64
        batch_size: 64
    trainer:
      reload_dataloaders_every_n_epochs: 1

Every other argument (``source``, ``root``, ``image_size``, ``num_samples``, ``synthetic``,
``derived``, ``batch_size``, ``seed``, ...) is passed to both :class:`AttributeDataModule` s.
Batches are those of :class:`AttributeDataModule`.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from multifeat.data.datamodule import AttributeDataModule
from multifeat.errors import ConfigError


class SwitchingDataModule(LightningDataModule):
    """Serve ``before``-filtered images until ``switch_epoch``, ``after``-filtered images from then on.

    Args:
        before: ``require`` filter of the first stage (feature 2, e.g. ``{"beard": True}``).
        after: ``require`` filter of the second stage (feature 1, e.g. ``{"bald": True}``).
        switch_epoch: first epoch (0-based) that gets the ``after`` images; None: the trained
            module's ``data_switch_epoch``.
        **data: arguments of :class:`AttributeDataModule` shared by both stages (not ``require``).
    """

    def __init__(
        self,
        before: dict[str, bool | int] | None = None,
        after: dict[str, bool | int] | None = None,
        switch_epoch: int | None = None,
        **data: Any,
    ) -> None:
        super().__init__()
        if "require" in data:
            raise ConfigError("SwitchingDataModule takes 'before' and 'after' filters instead of 'require'")
        if switch_epoch is not None and (isinstance(switch_epoch, bool) or not isinstance(switch_epoch, int) or switch_epoch < 0):
            raise ConfigError(f"switch_epoch must be an integer >= 0 or null, got {switch_epoch!r}")
        self.save_hyperparameters()
        self.before = AttributeDataModule(require=before, **data)
        self.after = AttributeDataModule(require=after, **data)
        self._switch_epoch = switch_epoch
        self.image_size = self.before.image_size
        self.attribute_names = self.before.attribute_names
        self.batch_size = self.before.batch_size
        #: the stage served by the last ``train_dataloader()`` call: ``"before"`` or ``"after"``
        self.active_stage: str | None = None

    @property
    def switch_epoch(self) -> int | None:
        """The switch epoch in force: the own value, else the trained module's ``data_switch_epoch``."""
        own = self._switch_epoch
        module = self._module()
        theirs = getattr(module, "data_switch_epoch", None) if module is not None else None
        if own is not None and theirs is not None and int(own) != int(theirs):
            raise ConfigError(
                f"SwitchingDataModule.switch_epoch={own} disagrees with the model's switch epoch {theirs}; "
                "set it in one place (leave data.switch_epoch null to follow the model)"
            )
        return own if own is not None else (None if theirs is None else int(theirs))

    def _module(self):
        trainer = getattr(self, "trainer", None)
        return getattr(trainer, "lightning_module", None) if trainer is not None else None

    def stage_at(self, epoch: int) -> str:
        """``"before"`` or ``"after"``: which images epoch ``epoch`` (0-based) trains on."""
        s = self.switch_epoch
        if s is None:
            raise ConfigError(
                "SwitchingDataModule has no switch epoch: set data.switch_epoch, or train a module with a "
                "data_switch_epoch (Phase3GAN's switch_epoch / snapshot_epoch)"
            )
        return "after" if epoch >= s else "before"

    def setup(self, stage: str | None = None) -> None:
        # the stages see the Trainer too, so they know whether it validates (and skip the valid split if not)
        self.before.trainer = self.after.trainer = getattr(self, "trainer", None)
        self.before.setup(stage)
        self.after.setup(stage)

    def _check_reload(self, trainer) -> None:
        s = self.switch_epoch
        max_epochs = getattr(trainer, "max_epochs", None)
        switch_inside = s is not None and s > 0 and (max_epochs is None or max_epochs < 0 or s < max_epochs)
        if switch_inside and getattr(trainer, "reload_dataloaders_every_n_epochs", 0) != 1:
            raise ConfigError(
                f"the training data switches at epoch {s}, so the Trainer must rebuild the train loader every epoch: "
                f"set trainer.reload_dataloaders_every_n_epochs: 1 (it is "
                f"{getattr(trainer, 'reload_dataloaders_every_n_epochs', 0)})"
            )

    def train_dataloader(self) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        epoch = int(trainer.current_epoch) if trainer is not None else 0
        if trainer is not None:
            self._check_reload(trainer)
        self.active_stage = self.stage_at(epoch)
        return (self.after if self.active_stage == "after" else self.before).train_dataloader()
