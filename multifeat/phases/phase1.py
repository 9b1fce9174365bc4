"""Method A, Phase 1: an LSGAN (G1, D1) trained on images that carry feature 1 (e.g. bald).

Losses (batch means, see :mod:`multifeat.losses`)::

    L_D1 = mean((D1(x) - 1)²) + mean(D1(G1(z))²)
    L_G1 = mean((D1(G1(z)) - 1)²)

One training step = one batch = one D1 update; G1 is updated on every ``d_steps_per_g``-th batch
(default 1: every batch), reusing that batch's fakes. ``trainer.global_step`` therefore counts
batches (not optimizer calls), so ``max_steps``, checkpoint and callback intervals are in batches.

Logged on the steps the logger writes (every ``trainer.log_every_n_steps`` batches; skipping the
others keeps the step cost near a plain PyTorch loop): ``loss/d``, ``loss/g`` (also in the progress
bar), ``d/real_mean`` (mean D1(x)), ``d/fake_mean`` (mean D1(G1(z)) before the D update).

Shapes: batches are dicts with ``"image"`` [B, 3, S, S] in [-1, 1] (tuples/lists: first element;
or a bare tensor). ``sample(n)`` -> [n, 3, S, S] in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from multifeat.errors import ConfigError
from multifeat.losses import lsgan_d_loss, lsgan_g_loss
from multifeat.nets.dcgan import DCGANDiscriminator, DCGANGenerator, check_image_size
from multifeat.nets.ema import EMA
from multifeat.phases.base import PhaseModule


def batch_images(batch: Any) -> torch.Tensor:
    """The image tensor of a batch: ``batch["image"]``, ``batch[0]`` or ``batch`` itself."""
    if isinstance(batch, dict):
        return batch["image"]
    if isinstance(batch, (list, tuple)):
        return batch[0]
    return batch


def _noop() -> None:
    return None


def step_uncounted(optimizer: Any) -> None:
    """``optimizer.step()`` without advancing ``trainer.global_step``.

    In manual optimisation Lightning adds one to ``global_step`` per optimizer step, so a GAN with
    two optimizers would count two steps per batch. Phase modules step their optimizers through
    this function and call :func:`count_step` once at the end of the batch. The step itself still
    goes through the strategy and precision plugin (gradient scaling, DDP) as usual.
    """
    before = getattr(optimizer, "_on_before_step", None)
    after = getattr(optimizer, "_on_after_step", None)
    if before is None or after is None:  # a plain torch optimizer (no trainer attached)
        optimizer.step()
        return
    optimizer._on_before_step = _noop
    optimizer._on_after_step = _noop
    try:
        optimizer.step()
    finally:
        optimizer._on_before_step = before
        optimizer._on_after_step = after


def count_step(optimizer: Any) -> None:
    """Advance ``trainer.global_step`` by one (Lightning's own step-progress hooks, no update)."""
    before = getattr(optimizer, "_on_before_step", None)
    after = getattr(optimizer, "_on_after_step", None)
    if before is not None and after is not None:
        before()
        after()


def should_log_step(module: Any) -> bool:
    """Whether this training step's scalars reach the logger (every ``log_every_n_steps`` batches).

    ``self.log`` costs a few hundred microseconds of Python per call; skipping it on the steps the
    logger does not write keeps a GAN step close to a plain PyTorch loop. Call it at the start of
    ``training_step`` (before the step is counted). Without a trainer it returns True.
    """
    trainer = getattr(module, "_trainer", None)
    if trainer is None:
        return True
    if trainer.fast_dev_run:
        return True
    n = trainer.log_every_n_steps
    return n > 0 and (trainer.global_step + 1) % n == 0


def _betas(value: Sequence[float], name: str) -> tuple[float, float]:
    b = tuple(float(v) for v in value)
    if len(b) != 2 or not all(0.0 <= v < 1.0 for v in b):
        raise ConfigError(f"{name} must be two numbers in [0, 1), e.g. [0.5, 0.999], got {list(value)}")
    return b  # type: ignore[return-value]


class Phase1GAN(PhaseModule):
    """G1/D1 trained with the LSGAN losses on feature-1 images.

    Args:
        image_size: image side S (power of two, 16-256). Default 64.
        z_dim: noise dimension. Default 128.
        g_width: generator channels at full resolution (doubling per halving). Default 64.
        d_width: discriminator channels at full resolution. Default 64.
        max_width: channel cap of both networks. Default 512.
        norm_g: generator normalisation (``batch``, ``instance``, ``none``). Default ``batch``.
        norm_d: discriminator normalisation. Default ``batch``.
        lr_g, lr_d: Adam learning rates. Default 2e-4 (DCGAN).
        betas_g, betas_d: Adam betas. Default (0.5, 0.999) (DCGAN).
        d_steps_per_g: D updates per G update (G steps on every k-th batch). Default 1.
        finite_check_every_n_steps: run the non-finite guard on every n-th step (each check waits
            for the device once per loss term); 0 disables it. Default 1.
        ema_decay: keep an EMA copy of G1 with this decay (e.g. 0.999), updated after every G step,
            used by :meth:`sample`; None (default) keeps none.
        num_fixed: size of the fixed noise batch used for sample grids. Default 64.
        fixed_seed: seed of the fixed noise. Default 0.
        generator: a ready generator (``z [N, z_dim] -> [N, 3, S, S]``, with attribute ``z_dim``);
            replaces the built one. Not stored in hparams: pass it again to ``load_from_checkpoint``.
        discriminator: a ready discriminator (``[N, 3, S, S] -> [N]``); replaces the built one.
    """

    phase = "phase1"

    def __init__(
        self,
        image_size: int = 64,
        z_dim: int = 128,
        g_width: int = 64,
        d_width: int = 64,
        max_width: int = 512,
        norm_g: str = "batch",
        norm_d: str = "batch",
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas_g: tuple[float, float] = (0.5, 0.999),
        betas_d: tuple[float, float] = (0.5, 0.999),
        d_steps_per_g: int = 1,
        finite_check_every_n_steps: int = 1,
        ema_decay: float | None = None,
        num_fixed: int = 64,
        fixed_seed: int = 0,
        generator: nn.Module | None = None,
        discriminator: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        check_image_size(image_size)
        if d_steps_per_g < 1:
            raise ConfigError(f"d_steps_per_g must be >= 1, got {d_steps_per_g}")
        if finite_check_every_n_steps < 0:
            raise ConfigError(f"finite_check_every_n_steps must be >= 0, got {finite_check_every_n_steps}")
        if num_fixed < 1:
            raise ConfigError(f"num_fixed must be >= 1, got {num_fixed}")
        for name, lr in (("lr_g", lr_g), ("lr_d", lr_d)):
            if not lr > 0:
                raise ConfigError(f"{name} must be > 0, got {lr}")
        if generator is not None:
            z_dim = int(getattr(generator, "z_dim", z_dim))
            image_size = int(getattr(generator, "image_size", image_size))
        self.save_hyperparameters(ignore=["generator", "discriminator"])
        # Store primitives only (checkpoints are read weights-only).
        self.hparams.update(
            image_size=image_size,
            z_dim=z_dim,
            betas_g=list(_betas(betas_g, "betas_g")),
            betas_d=list(_betas(betas_d, "betas_d")),
            custom_generator=generator is not None,
            custom_discriminator=discriminator is not None,
        )
        self.z_dim = z_dim
        self.generator = generator if generator is not None else DCGANGenerator(
            z_dim=z_dim, image_size=image_size, width=g_width, max_width=max_width, norm=norm_g
        )
        self.discriminator = discriminator if discriminator is not None else DCGANDiscriminator(
            image_size=image_size, width=d_width, max_width=max_width, norm=norm_d
        )
        self.ema = EMA(self.generator, ema_decay) if ema_decay is not None else None
        g = torch.Generator().manual_seed(int(fixed_seed))
        self.register_buffer("fixed_z", torch.randn(num_fixed, z_dim, generator=g), persistent=False)

    # ------------------------------------------------------------------------------------- sampling
    @property
    def generator_for_sampling(self) -> nn.Module:
        """The EMA generator when ``ema_decay`` is set, else the live one."""
        return self.ema.module if self.ema is not None else self.generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """G1(z): z [N, z_dim] -> images [N, 3, S, S] (live generator, current mode)."""
        return self.generator(z)

    def noise(self, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` noise vectors [n, z_dim] on this module's device. With ``seed`` they are drawn on
        the CPU from ``torch.Generator().manual_seed(seed)`` (same values on every device) and the
        global RNG is untouched; without, from the global RNG."""
        if seed is None:
            return torch.randn(n, self.z_dim, device=self.device)
        g = torch.Generator().manual_seed(int(seed))
        return torch.randn(n, self.z_dim, generator=g).to(self.device)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, ema: bool | None = None, batch_size: int = 256) -> torch.Tensor:
        """Images for noise ``z`` [N, z_dim] in eval mode (the training mode is restored after).

        ``ema``: None uses :attr:`generator_for_sampling`; False the live G1; True the EMA copy
        (error when there is none).
        """
        if ema is True and self.ema is None:
            raise ConfigError("this Phase1GAN keeps no EMA generator (ema_decay is None)")
        net = self.generator if ema is False else self.generator_for_sampling
        was_training = net.training
        net.eval()
        try:
            out = [net(chunk) for chunk in z.to(self.device).split(batch_size)]
        finally:
            net.train(was_training)
        return torch.cat(out) if out else z.new_zeros(0, 3, self.hparams.image_size, self.hparams.image_size)

    def sample(self, n: int, seed: int | None = None, ema: bool | None = None, batch_size: int = 256) -> torch.Tensor:
        """``n`` images [n, 3, S, S] in [-1, 1]; the same ``seed`` gives the same images."""
        return self.generate(self.noise(n, seed), ema=ema, batch_size=batch_size)

    def sample_fixed(self, n: int | None = None) -> torch.Tensor:
        """Images of the fixed noise (``num_fixed`` of them, or the first ``n``), for grids."""
        z = self.fixed_z if n is None else self.fixed_z[:n]
        return self.generate(z)

    # ------------------------------------------------------------------------------------- training
    def configure_optimizers(self):
        hp = self.hparams
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp.lr_g, betas=tuple(hp.betas_g))
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr_d, betas=tuple(hp.betas_d))
        return [opt_g, opt_d]

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x = batch_images(batch)
        opt_g, opt_d = self.optimizers()
        hp = self.hparams
        g_step = (batch_idx + 1) % hp.d_steps_per_g == 0
        n_check = hp.finite_check_every_n_steps
        check = n_check > 0 and self.global_step % n_check == 0
        log_now = should_log_step(self)
        z = torch.randn(x.shape[0], self.z_dim, device=x.device, dtype=x.dtype if x.is_floating_point() else None)

        # Fakes once per batch; with a G step their graph is kept and reused below.
        if g_step:
            fake = self.generator(z)
        else:
            with torch.no_grad():
                fake = self.generator(z)

        # --- D1: real -> 1, fake -> 0
        self.toggle_optimizer(opt_d)
        d_real = self.discriminator(x)
        d_fake = self.discriminator(fake.detach())
        loss_d = lsgan_d_loss(d_real, d_fake)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        if check:  # before the update: a bad step changes no weight
            self.check_finite(loss_d=loss_d)
        step_uncounted(opt_d)
        self.untoggle_optimizer(opt_d)

        loss_g = None
        if g_step:
            # --- G1: D1(G1(z)) -> 1, through the updated D1 (whose gradients are off here)
            self.toggle_optimizer(opt_g)
            loss_g = lsgan_g_loss(self.discriminator(fake))
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss_g)
            if check:
                self.check_finite(loss_g=loss_g)
            step_uncounted(opt_g)
            self.untoggle_optimizer(opt_g)
            if self.ema is not None:
                self.ema.update(self.generator)

        count_step(opt_d)  # one global step per batch
        if not log_now:
            return
        self.log("loss/d", loss_d.detach(), prog_bar=True)
        if loss_g is not None:
            self.log("loss/g", loss_g.detach(), prog_bar=True)
        self.log("d/real_mean", d_real.detach().float().mean())
        self.log("d/fake_mean", d_fake.detach().float().mean())
