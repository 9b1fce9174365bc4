"""The base of every GAN phase: one update routine, the optimizers, EMA and the sampling API.

:class:`GANModule` owns what the GAN phases (:class:`~multifeat.phases.phase1.Phase1GAN`,
:class:`~multifeat.phases.phase3.Phase3GAN`, :class:`~multifeat.phases.conditional_gan.ConditionalGAN`,
:class:`~multifeat.phases.stylegan2ada.StyleGAN2ADA`) share, so the rules below hold for all of them:

- **One global step per batch.** :meth:`training_step` runs the subclass's :meth:`gan_step` and then
  advances ``trainer.global_step`` by exactly one, however many optimizer steps the batch made
  (D and G, lazy regularisation, or a D-only batch). ``max_steps``, checkpoint, sample-grid and
  logging intervals are therefore in batches.
- **Every optimizer step** goes through :meth:`optimizer_update`: ``zero_grad`` -> finite check ->
  ``manual_backward`` -> step through the strategy (precision plugin, gradient scaler, DDP,
  ``on_before_optimizer_step`` hooks). Use it inside ``with self.toggled(opt):``, which switches
  off the gradients of the other network's parameters for the forward passes of that update.
- **Finite check.** On every ``finite_check_every_n_steps``-th batch (counted from global step 0;
  0 disables it) each loss is checked before its backward pass: a NaN/Inf loss raises
  :class:`~multifeat.errors.NonFiniteLossError` and no weight of that update changes. Each check
  waits for the device once, hence the cadence.
- **Logging cadence.** The scalars :meth:`gan_step` returns are logged only on the steps the logger
  writes (every ``trainer.log_every_n_steps`` batches, see :func:`should_log_step`); ``self.log``
  costs a few hundred microseconds per call, which the other steps skip. A scalar that a batch does
  not produce (a lazy regulariser's, a G loss with ``d_steps_per_g > 1``) is logged with its latest
  value of the current epoch, as Lightning reports a key logged on an earlier step of the epoch.
- **Plain DDP.** Each backward pass of a GAN reaches only one network's parameters, which DDP
  without ``find_unused_parameters`` refuses. Under such a DDP (``strategy: ddp``) the updates
  therefore run untoggled and every loss gets ``0 * sum(p)`` over the trainable parameters its
  backward pass would not reach, so that every backward pass gives every parameter a gradient
  (zeros for the other network). The other network's gradients are discarded by its own
  ``zero_grad`` before its next update, so the weights follow the same updates as with
  ``ddp_find_unused_parameters_true`` (``tests/ddp/test_ddp.py`` compares them bit for bit); the
  cost is that every backward pass all-reduces both networks' gradients (see ``docs/scaling.md``).
- **Optimizers.** :meth:`configure_optimizers` returns ``[opt_g, opt_d]``, Adam on the generator
  and the discriminator with the settings of :meth:`adam_settings` (by default ``lr_g``/``betas_g``
  and ``lr_d``/``betas_d`` from the hyper-parameters, checked by :func:`check_lr` /
  :func:`check_betas`).
- **Augmentation (ADA).** A subclass that calls :meth:`setup_augment` with a preset (e.g. ``"bgc"``)
  shows its discriminator every image, real or fake, in the D and in the G update, through the
  differentiable :class:`~multifeat.nets.stylegan2.augment.AugmentPipe` (:meth:`d_input`; gradients
  reach G through it). Its probability ``p`` is steered by the shared ADA controller
  :class:`~multifeat.nets.stylegan2.augment.AdaptiveP`: every ``ada_interval`` batches
  ``r_t = E[sign(D(real) - ada_logit_offset)]`` over the interval's real outputs, and ``p`` moves by
  ``sign(r_t - ada_target) * global_batch * ada_interval / (ada_kimg * 1000)`` (clamped at 0).
  The DCGAN phases are LSGANs whose D aims at 1 on reals and 0 on fakes, so their offset is 0.5:
  ``r_t`` is the fraction of reals D puts on the real side of its decision threshold minus the
  fraction it puts on the fake side (1 for a D that has memorised its reals). ``p`` and the
  statistics are buffers (saved and resumed with the checkpoint). Logged: ``ada/p``, ``ada/rt``.
  Without a preset nothing is built: the module, its state dict and its random draws are those of
  a module without augmentation.
- **EMA ramp-up.** :meth:`ema_decay_at` gives the decay of the EMA update after a batch: the
  fixed ``ema_decay``, or with ``ema_rampup`` the official StyleGAN2-ADA ramp (see there).
- **Sampling.** :meth:`noise`, :meth:`generate`, :meth:`sample` and :meth:`sample_fixed` with the
  fixed noise buffer ``fixed_z``; :attr:`generator_for_sampling` is the EMA copy when the module
  keeps one (:attr:`ema`), else the live generator.

Losses and regularisers are pure functions in :mod:`multifeat.losses`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from multifeat.errors import ConfigError
from multifeat.nets.ema import ema_rampup_decay
from multifeat.nets.stylegan2.augment import AdaptiveP, augment_pipe_from_preset
from multifeat.phases.base import PhaseModule, should_log_step
from multifeat.utils.lightning_private import count_optimizer_step

__all__ = [
    "GANModule",
    "batch_images",
    "check_betas",
    "check_augment",
    "check_finite_every",
    "check_lr",
    "freeze",
    "should_log_step",
]


# ---------------------------------------------------------------------------------------------- helpers
def batch_images(batch: Any) -> torch.Tensor:
    """The image tensor of a batch: ``batch["image"]``, ``batch[0]`` or ``batch`` itself."""
    if isinstance(batch, dict):
        return batch["image"]
    if isinstance(batch, (list, tuple)):
        return batch[0]
    return batch


def check_lr(name: str, value: float) -> float:
    """A learning rate must be a number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")
    return float(value)


def check_betas(value: Sequence[float], name: str) -> list[float]:
    """Adam betas: two numbers in [0, 1)."""
    try:
        b = [float(v) for v in value]
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name} must be two numbers in [0, 1), e.g. [0.5, 0.999], got {value!r}") from e
    if len(b) != 2 or not all(0.0 <= v < 1.0 for v in b):
        raise ConfigError(f"{name} must be two numbers in [0, 1), e.g. [0.5, 0.999], got {list(value)}")
    return b


def check_finite_every(value: int) -> int:
    """``finite_check_every_n_steps``: an integer >= 0 (0 disables the check)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"finite_check_every_n_steps must be >= 0 (an integer; 0 disables the check), got {value!r}")
    return value


def check_augment(augment: str | None, augment_p: float, ada_target: float | None, ada_interval: int,
                  ada_kimg: float) -> str | None:
    """The augmentation arguments of a GAN phase; returns the preset (None: no augmentation)."""
    if augment in (None, "", "none"):
        augment = None
    elif not isinstance(augment, str):
        raise ConfigError(f"augment must be an augmentation preset name such as 'bgc' or null, got {augment!r}")
    if isinstance(augment_p, bool) or not isinstance(augment_p, (int, float)) or not 0.0 <= augment_p <= 1.0:
        raise ConfigError(f"augment_p must be a number in [0, 1] (the initial augmentation probability), got {augment_p!r}")
    if ada_target is not None and (isinstance(ada_target, bool) or not isinstance(ada_target, (int, float))
                                   or not -1.0 <= ada_target <= 1.0):
        raise ConfigError(f"ada_target must be a number in [-1, 1] (e.g. 0.6) or null (p stays fixed), got {ada_target!r}")
    if isinstance(ada_interval, bool) or not isinstance(ada_interval, int) or ada_interval < 1:
        raise ConfigError(f"ada_interval must be an integer >= 1 (batches between p updates, e.g. 4), got {ada_interval!r}")
    if isinstance(ada_kimg, bool) or not isinstance(ada_kimg, (int, float)) or not ada_kimg > 0:
        raise ConfigError(f"ada_kimg must be > 0 (thousands of images for p to move by 1, e.g. 100), got {ada_kimg!r}")
    return augment


def check_ema_rampup(ema_rampup: float | None, ema_decay: float | None) -> float | None:
    """``ema_rampup``: None or a number > 0, and only together with an ``ema_decay``."""
    if ema_rampup is None:
        return None
    if isinstance(ema_rampup, bool) or not isinstance(ema_rampup, (int, float)) or not ema_rampup > 0:
        raise ConfigError(f"ema_rampup must be a number > 0 (e.g. 0.05) or null, got {ema_rampup!r}")
    if ema_decay is None:
        raise ConfigError(f"ema_rampup={ema_rampup} needs an EMA: set ema_decay (e.g. 0.999) too")
    return float(ema_rampup)


# ---------------------------------------------------------------------------------------------- base
class GANModule(PhaseModule):
    """A generator/discriminator pair trained with manual optimisation under the rules of this module.

    Subclasses build their networks (attribute names in :attr:`generator_attr` /
    :attr:`discriminator_attr`), record ``finite_check_every_n_steps`` in their hyper-parameters and
    implement :meth:`gan_step`.
    """

    generator_attr: ClassVar[str] = "generator"
    discriminator_attr: ClassVar[str] = "discriminator"
    #: logged names also shown in the progress bar
    progress_bar_keys: ClassVar[tuple[str, ...]] = ()
    #: D's decision threshold for the ADA statistic ``sign(D(real) - offset)`` (LSGAN targets 0/1)
    ada_logit_offset: ClassVar[float] = 0.5

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.ema = None
        self._finite_check_due = True
        self._epoch_logs: dict[str, Any] = {}
        self.augment_pipe = None
        self.ada = None

    # ------------------------------------------------------------------------------------- networks
    @property
    def g_net(self) -> nn.Module:
        """The trained generator."""
        return getattr(self, self.generator_attr)

    @property
    def d_net(self) -> nn.Module:
        """The trained discriminator."""
        return getattr(self, self.discriminator_attr)

    def check_ready(self) -> None:
        """Raise a clear error when the module cannot sample or train yet (here: always ready)."""

    # ------------------------------------------------------------------------------------- optimizers
    def adam_settings(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Keyword arguments of ``torch.optim.Adam`` for (G, D)."""
        hp = self.hparams
        return {"lr": hp.lr_g, "betas": tuple(hp.betas_g)}, {"lr": hp.lr_d, "betas": tuple(hp.betas_d)}

    def configure_optimizers(self):
        self.check_ready()
        g, d = self.adam_settings()
        opt_g = torch.optim.Adam(self.g_net.parameters(), **g)
        opt_d = torch.optim.Adam(self.d_net.parameters(), **d)
        return [opt_g, opt_d]

    # ------------------------------------------------------------------------------------- the update
    @property
    def finite_check_due(self) -> bool:
        """Whether the losses of the current batch are checked (see the module docstring)."""
        return self._finite_check_due

    def _finite_check_at(self, step: int) -> bool:
        n = int(self.hparams.finite_check_every_n_steps)
        return n > 0 and step % n == 0

    @property
    def every_parameter_in_every_backward(self) -> bool:
        """True under DDP without ``find_unused_parameters`` (plain ``strategy: ddp``)."""
        trainer = self._trainer
        if trainer is None:
            return False
        wrapped = getattr(trainer.strategy, "model", None)
        return isinstance(wrapped, DistributedDataParallel) and not wrapped.find_unused_parameters

    @contextmanager
    def toggled(self, optimizer: Any) -> Iterator[None]:
        """Only ``optimizer``'s parameters require gradients inside the block (Lightning's toggle);
        under plain DDP nothing is toggled (see the module docstring)."""
        if self.every_parameter_in_every_backward:
            yield
            return
        self.toggle_optimizer(optimizer)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def optimizer_update(self, optimizer: Any, loss: torch.Tensor, name: str) -> None:
        """One optimizer step on ``loss``: zero_grad -> finite check (on due batches, before the
        backward pass: a bad loss changes no weight) -> ``manual_backward`` -> step.

        The step goes through the trainer's strategy (precision plugin, gradient scaler, DDP, the
        ``on_before_optimizer_step`` hooks) and is not counted as a global step; :meth:`training_step`
        counts the batch once. Without a trainer it is a plain ``backward`` + ``step``.
        """
        optimizer.zero_grad(set_to_none=True)
        if self._finite_check_due:
            self.check_finite(**{name: loss})
        if self._trainer is None:
            loss.backward()
            optimizer.step()
            return
        if self.every_parameter_in_every_backward:
            loss = loss + _zero_touch(loss, (p for p in self.parameters() if p.requires_grad))
        self.manual_backward(loss)
        raw = getattr(optimizer, "optimizer", optimizer)  # the torch optimizer inside LightningOptimizer
        self.trainer.strategy.optimizer_step(raw, closure=_no_closure, model=self)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        log_now = should_log_step(self)
        self._finite_check_due = self._finite_check_at(int(self.global_step))
        opt_g, opt_d = self.optimizers()
        logs = self.gan_step(batch, batch_idx, opt_g, opt_d)
        count_optimizer_step(opt_d)  # one global step per batch
        if batch_idx == 0:  # Lightning's logged values start afresh every epoch
            self._epoch_logs.clear()
        if logs:
            self._epoch_logs.update(logs)
        if log_now and self._epoch_logs:
            self.log_gan_metrics(self._epoch_logs, batch_images(batch).shape[0])

    def gan_step(self, batch: Any, batch_idx: int, opt_g: Any, opt_d: Any) -> Mapping[str, Any] | None:
        """The subclass's work on one batch (its updates through :meth:`optimizer_update`); returns
        the scalars to log (tensors or numbers), or None."""
        raise NotImplementedError

    def log_gan_metrics(self, logs: Mapping[str, Any], batch_size: int) -> None:
        shown = {k: v for k, v in logs.items() if k in self.progress_bar_keys}
        rest = {k: v for k, v in logs.items() if k not in self.progress_bar_keys}
        if shown:
            self.log_dict(shown, prog_bar=True, batch_size=batch_size)
        if rest:
            self.log_dict(rest, batch_size=batch_size)

    # ------------------------------------------------------------------------------------- augmentation
    def setup_augment(self, augment: str | None, augment_p: float = 0.0, ada_target: float | None = 0.6,
                      ada_interval: int = 4, ada_kimg: float = 100) -> None:
        """Build the augmentation pipe and its ADA controller (see the module docstring); ``augment``
        None builds nothing."""
        augment = check_augment(augment, augment_p, ada_target, ada_interval, ada_kimg)
        if augment is None:
            self.augment_pipe = None
            self.ada = None
            return
        self.augment_pipe = augment_pipe_from_preset(augment, p=float(augment_p))
        self.ada = AdaptiveP(self.augment_pipe, target=ada_target, interval=ada_interval, ada_kimg=ada_kimg)

    def d_input(self, images: torch.Tensor) -> torch.Tensor:
        """What the discriminator sees: ``images`` through the augmentation pipe when there is one and
        its ``p`` is > 0 (differentiable: gradients reach the images), else ``images`` unchanged."""
        if self.augment_pipe is not None and float(self.augment_pipe.p) > 0:
            return self.augment_pipe(images)
        return images

    def observe_real(self, d_real: torch.Tensor) -> None:
        """Add D's outputs on (augmented) reals to the ADA statistics (with a pipe; else nothing)."""
        if self.ada is not None:
            self.ada.accumulate(d_real.detach().float() - self.ada_logit_offset)

    def ada_step(self, batch_size: int) -> dict[str, float]:
        """End of a batch: every ``ada_interval``-th batch (by global step) adjust ``p``; returns the
        scalars to log (``ada/p``; ``ada/rt`` when it was adjusted), empty without a pipe."""
        if self.ada is None:
            return {}
        logs: dict[str, float] = {}
        if (int(self.global_step) + 1) % self.ada.interval == 0:
            world = int(getattr(self._trainer, "world_size", 1) or 1) if self._trainer is not None else 1
            rt = self.ada.adjust(int(batch_size) * world)
            if rt is not None:
                logs["ada/rt"] = rt
        logs["ada/p"] = float(self.augment_pipe.p)
        return logs

    # ------------------------------------------------------------------------------------- EMA
    def ema_decay_at(self, batch_size: int) -> float:
        """The decay of the EMA update after the current batch: ``ema_decay``, ramped up with
        ``ema_rampup`` (hyper-parameter; see :func:`ema_rampup_decay`) over the images trained on
        before it (``global_step * batch_size * world size``)."""
        decay = float(self.ema.decay)
        rampup = self.hparams.get("ema_rampup")
        if rampup is None:
            return decay
        world = int(getattr(self._trainer, "world_size", 1) or 1) if self._trainer is not None else 1
        batch = int(batch_size) * world
        return ema_rampup_decay(decay, rampup, int(self.global_step) * batch, batch)

    def update_ema(self, batch_size: int | None = None) -> float | None:
        """Move the EMA generator (when the module keeps one) towards the live one; returns the decay
        used (None without an EMA). ``batch_size`` (this process's) is needed with ``ema_rampup``."""
        if self.ema is None:
            return None
        if self.hparams.get("ema_rampup") is not None:
            if batch_size is None:
                raise ConfigError("update_ema: ema_rampup needs the batch size")
            decay = self.ema_decay_at(batch_size)
        else:
            decay = float(self.ema.decay)
        self.ema.update(self.g_net, decay=decay)
        return decay

    @property
    def generator_for_sampling(self) -> nn.Module:
        """The EMA generator when the module keeps one, else the live one."""
        return self.ema.module if self.ema is not None else self.g_net

    # ------------------------------------------------------------------------------------- sampling
    def register_fixed_noise(self, num: int, z_dim: int, seed: int) -> None:
        """The fixed noise ``fixed_z`` [num, z_dim] of sample grids (not saved: rebuilt from the seed)."""
        g = torch.Generator().manual_seed(int(seed))
        self.register_buffer("fixed_z", torch.randn(int(num), int(z_dim), generator=g), persistent=False)

    def noise(self, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` noise vectors [n, z_dim] on this module's device. With ``seed`` they are drawn on
        the CPU from ``torch.Generator().manual_seed(seed)`` (same values on every device) and the
        global RNG is untouched; without, from the global RNG."""
        self.check_ready()
        if seed is None:
            return torch.randn(n, self.z_dim, device=self.device)
        g = torch.Generator().manual_seed(int(seed))
        return torch.randn(n, self.z_dim, generator=g).to(self.device)

    def run_in_eval(self, net: nn.Module, fn: Callable[..., torch.Tensor], tensors: Sequence[torch.Tensor],
                    batch_size: int) -> torch.Tensor:
        """``fn`` over chunks of ``batch_size`` rows of ``tensors`` (moved to this device) with ``net``
        in eval mode and no gradients; ``net``'s mode is restored after. [N, 3, S, S]."""
        n = tensors[0].shape[0]
        step = max(1, int(batch_size))
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                out = [fn(*(t[i : i + step].to(self.device) for t in tensors)) for i in range(0, n, step)]
        finally:
            net.train(was_training)
        if not out:
            size = int(self.hparams.image_size)
            return torch.zeros(0, 3, size, size, device=self.device)
        return torch.cat(out)

    def generate(self, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Images of noise ``z`` [N, z_dim] from :attr:`generator_for_sampling` in eval mode."""
        net = self.generator_for_sampling
        return self.run_in_eval(net, net, [z], batch_size)

    def sample(self, n: int, seed: int | None = None, **kwargs: Any) -> torch.Tensor:
        """``n`` images [n, 3, S, S] in [-1, 1]; the same ``seed`` gives the same images."""
        return self.generate(self.noise(n, seed), **kwargs)

    def sample_fixed(self, n: int | None = None) -> torch.Tensor:
        """Images of the fixed noise (``num_fixed`` of them, or the first ``n``), for grids."""
        self.check_ready()
        return self.generate(self.fixed_z if n is None else self.fixed_z[:n])


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients for ``module`` (a frozen network); returns it."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _no_closure() -> None:
    return None


def _zero_touch(loss: torch.Tensor, params: Iterator[nn.Parameter]) -> torch.Tensor:
    """``0 * sum(p)`` over ``params``: adds nothing to ``loss`` but gives each parameter a (zero) gradient."""
    return sum((p.sum().to(loss.dtype) * 0.0 for p in params), loss.new_zeros(()))
