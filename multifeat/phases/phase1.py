"""Method A, Phase 1: an LSGAN (G1, D1) trained on images that carry feature 1 (e.g. bald).

Losses (batch means, see :mod:`multifeat.losses`)::

    L_D1 = mean((D1(x) - 1)²) + mean(D1(G1(z))²)
    L_G1 = mean((D1(G1(z)) - 1)²)

One training step = one batch = one D1 update; G1 is updated on every ``d_steps_per_g``-th batch
(default 1: every batch), reusing that batch's fakes. ``trainer.global_step`` therefore counts
batches (not optimizer calls), so ``max_steps``, checkpoint and callback intervals are in batches.

Logged on the steps the logger writes (every ``trainer.log_every_n_steps`` batches; skipping the
others keeps the step cost near a plain PyTorch loop): ``loss/d``, ``loss/g`` (also in the progress
bar), ``d/real_mean`` (mean D1(x)), ``d/fake_mean`` (mean D1(G1(z)) before the D update), and with
augmentation ``ada/p`` and ``ada/rt``.

Scarce data: with ``augment`` (e.g. ``"bgc"``) D1 sees reals and fakes through the ADA pipeline in
both updates and ``p`` adapts to D1's overfitting (see :mod:`multifeat.phases.gan` and
``docs/augment.md``); ``ema_rampup`` ramps the EMA decay up from 0 so that the EMA generator is
usable from the first steps.

Shapes: batches are dicts with ``"image"`` [B, 3, S, S] in [-1, 1] (tuples/lists: first element;
or a bare tensor). ``sample(n)`` -> [n, 3, S, S] in [-1, 1].
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from multifeat.errors import ConfigError
from multifeat.losses import lsgan_d_loss, lsgan_g_loss
from multifeat.nets.dcgan import DCGANDiscriminator, DCGANGenerator, check_image_size, check_upsample
from multifeat.nets.ema import EMA
from multifeat.phases.gan import (
    GANModule,
    batch_images,
    check_betas,
    check_ema_rampup,
    check_finite_every,
    check_lr,
    should_log_step,
)

__all__ = ["Phase1GAN", "batch_images", "should_log_step"]


class Phase1GAN(GANModule):
    """G1/D1 trained with the LSGAN losses on feature-1 images.

    Args:
        image_size: image side S (power of two, 16-256). Default 64.
        z_dim: noise dimension. Default 128.
        g_width: generator channels at full resolution (doubling per halving). Default 64.
        d_width: discriminator channels at full resolution. Default 64.
        max_width: channel cap of both networks. Default 512.
        norm_g: generator normalisation (``batch``, ``instance``, ``none``). Default ``batch``.
        norm_d: discriminator normalisation. Default ``batch``.
        upsample: how the generator doubles its resolution: ``transpose`` (DCGAN's 4x4 transposed
            convolutions) or ``nearest`` (nearest-neighbour x2 and a 3x3 convolution: no checkerboard; on
            MultiFeat-Synth steadier and better, docs/benchmark.md). Default ``transpose``.
        lr_g, lr_d: Adam learning rates. Default 2e-4 (DCGAN).
        betas_g, betas_d: Adam betas. Default (0.5, 0.999) (DCGAN).
        d_steps_per_g: D updates per G update (G steps on every k-th batch). Default 1.
        finite_check_every_n_steps: run the non-finite guard on every n-th step (each check waits
            for the device once per loss term); 0 disables it. Default 1.
        ema_decay: keep an EMA copy of G1 with this decay (e.g. 0.999), updated after every G step,
            used by :meth:`sample`; None (default) keeps none.
        ema_rampup: ramp the EMA decay up as StyleGAN2-ADA does: the half-life (in images) of
            ``ema_decay`` is capped at ``images seen * ema_rampup`` (e.g. 0.05), so the first update
            copies G1 and the decay reaches ``ema_decay`` later. None (default): fixed decay.
        augment: ADA augmentation preset of :mod:`multifeat.nets.stylegan2.augment` (e.g. ``"bgc"``)
            for D1's inputs, real and fake; None (default) none.
        augment_p: initial augmentation probability. Default 0.
        ada_target: target of ``E[sign(D1(real) - 0.5)]``; None keeps ``p`` fixed. Default 0.6.
        ada_interval: batches between ``p`` updates. Default 4.
        ada_kimg: thousands of images for ``p`` to move by 1. Default 100 (faster than
            StyleGAN2-ADA's 500: the DCGAN phases train for far fewer images).
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
        upsample: str = "transpose",
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas_g: tuple[float, float] = (0.5, 0.999),
        betas_d: tuple[float, float] = (0.5, 0.999),
        d_steps_per_g: int = 1,
        finite_check_every_n_steps: int = 1,
        ema_decay: float | None = None,
        ema_rampup: float | None = None,
        augment: str | None = None,
        augment_p: float = 0.0,
        ada_target: float | None = 0.6,
        ada_interval: int = 4,
        ada_kimg: float = 100,
        num_fixed: int = 64,
        fixed_seed: int = 0,
        generator: nn.Module | None = None,
        discriminator: nn.Module | None = None,
    ) -> None:
        super().__init__()
        check_image_size(image_size)
        check_upsample(upsample)
        if d_steps_per_g < 1:
            raise ConfigError(f"d_steps_per_g must be >= 1, got {d_steps_per_g}")
        check_finite_every(finite_check_every_n_steps)
        if num_fixed < 1:
            raise ConfigError(f"num_fixed must be >= 1, got {num_fixed}")
        check_lr("lr_g", lr_g)
        check_lr("lr_d", lr_d)
        check_ema_rampup(ema_rampup, ema_decay)
        if generator is not None:
            z_dim = int(getattr(generator, "z_dim", z_dim))
            image_size = int(getattr(generator, "image_size", image_size))
        self.save_hyperparameters(ignore=["generator", "discriminator"])
        # Store primitives only (checkpoints are read weights-only).
        self.hparams.update(
            image_size=image_size,
            z_dim=z_dim,
            betas_g=check_betas(betas_g, "betas_g"),
            betas_d=check_betas(betas_d, "betas_d"),
            custom_generator=generator is not None,
            custom_discriminator=discriminator is not None,
        )
        self.z_dim = z_dim
        self.generator = generator if generator is not None else DCGANGenerator(
            z_dim=z_dim, image_size=image_size, width=g_width, max_width=max_width, norm=norm_g, upsample=upsample
        )
        self.discriminator = discriminator if discriminator is not None else DCGANDiscriminator(
            image_size=image_size, width=d_width, max_width=max_width, norm=norm_d
        )
        self.ema = EMA(self.generator, ema_decay) if ema_decay is not None else None
        self.setup_augment(augment, augment_p, ada_target, ada_interval, ada_kimg)
        self.register_fixed_noise(num_fixed, z_dim, fixed_seed)

    # ------------------------------------------------------------------------------------- sampling
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """G1(z): z [N, z_dim] -> images [N, 3, S, S] (live generator, current mode)."""
        return self.generator(z)

    def generate(self, z: torch.Tensor, ema: bool | None = None, batch_size: int = 256) -> torch.Tensor:
        """Images for noise ``z`` [N, z_dim] in eval mode (the training mode is restored after).

        ``ema``: None uses :attr:`generator_for_sampling`; False the live G1; True the EMA copy
        (error when there is none).
        """
        if ema is True and self.ema is None:
            raise ConfigError("this Phase1GAN keeps no EMA generator (ema_decay is None)")
        net = self.generator if ema is False else self.generator_for_sampling
        return self.run_in_eval(net, net, [z], batch_size)

    def sample(self, n: int, seed: int | None = None, ema: bool | None = None, batch_size: int = 256) -> torch.Tensor:
        """``n`` images [n, 3, S, S] in [-1, 1]; the same ``seed`` gives the same images."""
        return self.generate(self.noise(n, seed), ema=ema, batch_size=batch_size)

    # ------------------------------------------------------------------------------------- training
    progress_bar_keys = ("loss/d", "loss/g")

    def gan_step(self, batch: Any, batch_idx: int, opt_g: Any, opt_d: Any) -> dict[str, torch.Tensor]:
        x = batch_images(batch)
        g_step = (batch_idx + 1) % self.hparams.d_steps_per_g == 0
        z = torch.randn(x.shape[0], self.z_dim, device=x.device, dtype=x.dtype if x.is_floating_point() else None)

        # Fakes once per batch; with a G step their graph is kept and reused below.
        if g_step:
            fake = self.generator(z)
        else:
            with torch.no_grad():
                fake = self.generator(z)

        # --- D1: real -> 1, fake -> 0
        with self.toggled(opt_d):
            d_real = self.discriminator(self.d_input(x))
            d_fake = self.discriminator(self.d_input(fake.detach()))
            loss_d = lsgan_d_loss(d_real, d_fake)
            self.optimizer_update(opt_d, loss_d, "loss_d")
        self.observe_real(d_real)
        logs = {"loss/d": loss_d.detach(), "d/real_mean": d_real.detach().float().mean(),
                "d/fake_mean": d_fake.detach().float().mean()}

        if g_step:
            # --- G1: D1(G1(z)) -> 1, through the updated D1 (whose gradients are off here)
            with self.toggled(opt_g):
                loss_g = lsgan_g_loss(self.discriminator(self.d_input(fake)))
                self.optimizer_update(opt_g, loss_g, "loss_g")
            decay = self.update_ema(x.shape[0])
            if decay is not None and self.hparams.ema_rampup is not None:
                logs["ema/decay"] = decay
            logs["loss/g"] = loss_g.detach()
        logs.update(self.ada_step(x.shape[0]))
        return logs
