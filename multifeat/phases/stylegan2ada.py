"""Method B: StyleGAN2-ADA training (Karras et al. 2020, arXiv:2006.06676) as a LightningModule.

One training step = one batch of real images, as in the official training loop:

* ``Gmain``: non-saturating logistic loss ``softplus(-D(G(z)))`` (with style mixing, probability 0.9).
* ``Greg`` every ``pl_interval`` (4) batches: path-length regularisation on ``batch / pl_batch_shrink``
  fakes, ``pl_weight * (|J_w^T y| - a)^2`` with ``a`` the running mean (decay ``pl_decay`` = 0.01),
  multiplied by the interval (lazy regularisation).
* ``Dmain``: ``softplus(D(G(z))) + softplus(-D(x))``.
* ``Dreg`` every ``r1_interval`` (16) batches: R1 ``gamma/2 * |grad_x D(augment(x))|^2`` times the
  interval; the gradient is taken with respect to the un-augmented reals ``x``, through the
  augmentation (as the official loss does); ``gamma`` defaults to ``0.0002 * resolution^2 / batch``
  (the official 'auto' setting).
* Adam ``lr`` and ``betas`` of each network are corrected for lazy regularisation:
  ``lr * c``, ``beta ** c`` with ``c = interval / (interval + 1)``.
* ``G_ema``: exponential moving average of G with half-life ``ema_kimg`` thousand images (default
  ``batch * 10 / 32``), ramped up over the first images (``ema_rampup`` 0.05).
* ADA: D sees real and fake images through the augmentation pipeline; every ``ada_interval`` (4)
  batches ``p += sign(E[sign(D(real))] - ada_target) * batch * ada_interval / (ada_kimg * 1000)``,
  clamped at 0 (statistics summed across processes). ``E`` runs over every real logit D produced in
  the interval, in the ``Dmain`` and the ``Dreg`` passes, as in the official loop. The controller is
  :class:`multifeat.nets.stylegan2.augment.AdaptiveP`.
* Before every optimizer step the gradients are sanitised as in the official loop:
  ``nan_to_num(grad, nan=0, posinf=1e5, neginf=-1e5)`` (in
  :meth:`StyleGAN2ADA.on_before_optimizer_step`). A non-finite *loss* still stops training with
  :class:`~multifeat.errors.NonFiniteLossError`.

Everything that training changes (weights, ``G_ema``, ``pl_mean``, ADA ``p`` and its statistics,
images seen) is a parameter or buffer, hence in the checkpoint. Batches are dicts with ``"image"``
``[B, 3, S, S]`` in [-1, 1] (and ``"attrs"`` ``[B, A]`` labels when ``c_dim > 0``).
``sample(n, seed)`` -> ``[n, 3, S, S]`` in [-1, 1] from ``G_ema``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from multifeat.errors import ConfigError
from multifeat.losses import logistic_d_loss, logistic_g_loss, path_length_penalty, r1_penalty
from multifeat.nets.stylegan2 import Discriminator, Generator
from multifeat.nets.stylegan2.augment import AdaptiveP, ada_adjust, augment_pipe_from_preset
from multifeat.phases.gan import GANModule, check_betas, check_finite_every, check_lr

__all__ = [
    "StyleGAN2ADA",
    "ada_adjust",
    "lazy_adam_settings",
    "path_length_penalty",
    "r1_penalty",
    "sanitize_gradients",
]


# ---------------------------------------------------------------------------------------------
# Pure functions (tested against plain autograd computations)


# ``r1_penalty`` and ``path_length_penalty`` live in :mod:`multifeat.losses`; ``ada_adjust`` (the ADA
# rule) in :mod:`multifeat.nets.stylegan2.augment`. They are imported here for existing callers.


def lazy_adam_settings(lr: float, betas: Sequence[float], interval: int | None) -> tuple[float, tuple[float, ...]]:
    """Adam settings corrected for lazy regularisation every ``interval`` steps: ``lr*c``, ``beta**c``
    with ``c = interval / (interval + 1)`` (unchanged when ``interval`` is None or 0)."""
    if not interval:
        return float(lr), tuple(float(b) for b in betas)
    c = interval / (interval + 1)
    return float(lr) * c, tuple(float(b) ** c for b in betas)


@torch.no_grad()
def sanitize_gradients(parameters) -> None:
    """The official loop's gradient clean-up before each optimizer step, in place:
    ``nan_to_num(grad, nan=0, posinf=1e5, neginf=-1e5)`` on every parameter that has a gradient."""
    for param in parameters:
        if param.grad is not None:
            torch.nan_to_num(param.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=param.grad)


def _build_augment_pipe(augment: str | None, p: float) -> nn.Module | None:
    if augment in (None, "", "none"):
        return None
    return augment_pipe_from_preset(augment, p=p)


# ---------------------------------------------------------------------------------------------


class StyleGAN2ADA(GANModule):
    """StyleGAN2-ADA generator and discriminator, trained with the official losses and schedules.

    Args:
        image_size: resolution (power of two >= 8). Default 64.
        c_dim: label size (0 = unconditional; else the batch's ``"attrs"``, first ``c_dim`` columns).
        z_dim, w_dim: latent sizes. Default 512 (official).
        mapping_layers: mapping network depth. Default 2 (official 'auto' config).
        channel_base, channel_max: channels ``min(channel_base // res, channel_max)``. Default
            16384 / 512 (official 'auto' below 512 px).
        num_fp16_res: highest resolutions run in float16 (official: 4, on GPU). Default 0.
        conv_clamp: Default 256. mbstd_group_size: Default 4 (capped by the batch size).
        g_architecture / d_architecture: ``skip`` / ``resnet`` (official).
        lr: Adam learning rate of both networks. Default 0.0025. betas: Default (0, 0.99).
        r1_gamma: R1 weight; None = ``0.0002 * image_size^2 / batch``. r1_interval: Default 16.
        pl_weight: Default 2. pl_interval: Default 4. pl_decay: 0.01. pl_batch_shrink: 2.
        style_mixing_prob: Default 0.9.
        ema_kimg: EMA half-life in thousands of images; None = ``batch * 10 / 32``. ema_rampup: 0.05
            (None disables the ramp-up).
        augment: augmentation preset of ``multifeat.nets.stylegan2.augment`` (default ``"bgc"``), or
            None for no augmentation. augment_p: initial p (0). ada_target: 0.6 (None keeps p fixed).
            ada_interval: 4. ada_kimg: 500.
        num_fixed: fixed-noise samples for grids (64). fixed_seed: 0. sample_truncation_psi: 1.
        finite_check_every_n_steps: run the non-finite guard on every n-th step; 0 disables it (1).
    """

    phase = "stylegan2ada"
    generator_attr = "G"
    discriminator_attr = "D"
    progress_bar_keys = ("loss/G", "loss/D")

    def __init__(
        self,
        image_size: int = 64,
        c_dim: int = 0,
        z_dim: int = 512,
        w_dim: int = 512,
        mapping_layers: int = 2,
        channel_base: int = 16384,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        conv_clamp: float | None = 256,
        mbstd_group_size: int = 4,
        g_architecture: str = "skip",
        d_architecture: str = "resnet",
        lr: float = 0.0025,
        betas: tuple[float, float] = (0.0, 0.99),
        r1_gamma: float | None = None,
        r1_interval: int = 16,
        pl_weight: float = 2.0,
        pl_interval: int = 4,
        pl_decay: float = 0.01,
        pl_batch_shrink: int = 2,
        style_mixing_prob: float = 0.9,
        ema_kimg: float | None = None,
        ema_rampup: float | None = 0.05,
        augment: str | None = "bgc",
        augment_p: float = 0.0,
        ada_target: float | None = 0.6,
        ada_interval: int = 4,
        ada_kimg: float = 500,
        num_fixed: int = 64,
        fixed_seed: int = 0,
        sample_truncation_psi: float = 1.0,
        finite_check_every_n_steps: int = 1,
    ) -> None:
        super().__init__()
        if image_size < 8 or image_size & (image_size - 1):
            raise ConfigError(f"image_size must be a power of two >= 8, got {image_size}")
        for name, v in (("r1_interval", r1_interval), ("pl_interval", pl_interval), ("ada_interval", ada_interval),
                        ("pl_batch_shrink", pl_batch_shrink), ("num_fixed", num_fixed)):
            if int(v) < 1:
                raise ConfigError(f"{name} must be >= 1, got {v}")
        check_lr("lr", lr)
        check_finite_every(finite_check_every_n_steps)
        if not 0 <= style_mixing_prob <= 1:
            raise ConfigError(f"style_mixing_prob must be in [0, 1], got {style_mixing_prob}")
        betas = check_betas(betas, "betas")
        self.save_hyperparameters()
        self.hparams.update(betas=betas)

        self.G = Generator(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=image_size, img_channels=3,
            mapping_kwargs={"num_layers": mapping_layers},
            synthesis_kwargs={"channel_base": channel_base, "channel_max": channel_max,
                              "num_fp16_res": num_fp16_res, "conv_clamp": conv_clamp,
                              "architecture": g_architecture},
        )
        self.D = Discriminator(
            c_dim=c_dim, img_resolution=image_size, img_channels=3, architecture=d_architecture,
            channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp,
            epilogue_kwargs={"mbstd_group_size": mbstd_group_size},
        )
        self.G_ema = Generator(**self.G.init_kwargs).eval().requires_grad_(False)
        self.G_ema.load_state_dict(self.G.state_dict())
        self.augment_pipe = _build_augment_pipe(augment, augment_p)
        # the ADA controller: statistics in its buffer ``ada.stats``; it moves ``augment_pipe.p``
        self.ada = AdaptiveP(self.augment_pipe, target=ada_target, interval=ada_interval, ada_kimg=ada_kimg)
        self._register_load_state_dict_pre_hook(_rename_old_ada_stats)

        self.register_buffer("pl_mean", torch.zeros([]))
        self.register_buffer("images_seen", torch.zeros([], dtype=torch.long))
        self.register_buffer("batches_seen", torch.zeros([], dtype=torch.long))
        self.register_fixed_noise(num_fixed, z_dim, fixed_seed)

    def train(self, mode: bool = True) -> StyleGAN2ADA:
        """Set training mode; ``G_ema`` always stays in eval mode (no ``w_avg`` updates)."""
        super().train(mode)
        self.G_ema.eval()
        return self

    # ------------------------------------------------------------------------------------- sampling
    @property
    def z_dim(self) -> int:
        return self.G.z_dim

    def _labels(self, n: int, c: Tensor | None) -> Tensor | None:
        if self.G.c_dim == 0:
            return None
        if c is None:
            raise ConfigError(f"this StyleGAN2ADA is conditional (c_dim={self.G.c_dim}); pass labels c [n, c_dim]")
        return c.to(self.device, torch.float32)

    @property
    def generator_for_sampling(self) -> nn.Module:
        return self.G_ema

    def generate(self, z: Tensor, c: Tensor | None = None, truncation_psi: float | None = None,
                 noise_mode: str = "const", batch_size: int = 64) -> Tensor:
        """``G_ema`` images ``[N, 3, S, S]`` clamped to [-1, 1] for latents ``z [N, z_dim]``."""
        psi = self.hparams.sample_truncation_psi if truncation_psi is None else truncation_psi
        c = self._labels(z.shape[0], c)

        def render(zi: Tensor, ci: Tensor | None = None) -> Tensor:
            return self.G_ema(zi, ci, truncation_psi=psi, noise_mode=noise_mode)

        return self.run_in_eval(self.G_ema, render, [z] if c is None else [z, c], batch_size).clamp(-1, 1)

    def sample(self, n: int, seed: int | None = None, c: Tensor | None = None, **kwargs: Any) -> Tensor:
        """``n`` images ``[n, 3, S, S]`` in [-1, 1]; the same ``seed`` gives the same images."""
        return self.generate(self.noise(n, seed), c, **kwargs)

    def sample_fixed(self, n: int | None = None) -> Tensor:
        """Images of the fixed latents (for sample grids). Conditional models use all-zero labels."""
        z = self.fixed_z if n is None else self.fixed_z[:n]
        c = torch.zeros(z.shape[0], self.G.c_dim) if self.G.c_dim else None
        return self.generate(z, c)

    # ------------------------------------------------------------------------------------- training
    def adam_settings(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Both networks' Adam settings, corrected for their lazy regularisation (eps 1e-8)."""
        hp = self.hparams
        g_lr, g_betas = lazy_adam_settings(hp.lr, hp.betas, hp.pl_interval if hp.pl_weight > 0 else None)
        d_lr, d_betas = lazy_adam_settings(hp.lr, hp.betas, hp.r1_interval)
        return {"lr": g_lr, "betas": g_betas, "eps": 1e-8}, {"lr": d_lr, "betas": d_betas, "eps": 1e-8}

    def _world_size(self) -> int:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size()
        return 1

    def r1_gamma(self, global_batch: int) -> float:
        hp = self.hparams
        return float(hp.r1_gamma) if hp.r1_gamma is not None else 0.0002 * hp.image_size**2 / global_batch

    def run_G(self, z: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        """Fakes with style mixing (probability ``style_mixing_prob``): ``(images, ws)``."""
        ws = self.G.mapping(z, c)
        if self.hparams.style_mixing_prob > 0 and torch.rand([]).item() < self.hparams.style_mixing_prob:
            cutoff = int(torch.randint(1, ws.shape[1], []).item())
            ws2 = self.G.mapping(torch.randn_like(z), c, skip_w_avg_update=True)
            ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
        return self.G.synthesis(ws, noise_mode="random"), ws

    def run_D(self, images: Tensor, c: Tensor | None) -> Tensor:
        if self.augment_pipe is not None and float(self.augment_pipe.p) > 0:
            images = self.augment_pipe(images)
        return self.D(images, c)

    @property
    def ada_stats(self) -> Tensor:
        """This process's ADA statistics of the current interval: ``[sum of sign(D(real)), count]``."""
        return self.ada.stats

    def accumulate_ada(self, real_logits: Tensor) -> None:
        """Add ``sign(D(real))`` of one discriminator pass over reals to the ADA statistics."""
        self.ada.accumulate(real_logits)

    def update_ada(self, global_batch: int) -> float | None:
        """End of an ADA interval: adjust ``p`` from the statistics (summed across processes); returns r_t.

        Without an augmentation pipe the statistics are cleared and None is returned."""
        if self.augment_pipe is None:
            self.ada.stats.zero_()
            return None
        return self.ada.adjust(global_batch)

    def r1(self, x: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        """R1 as the official loss takes it: ``(penalty [B], logits)`` with the gradient of
        ``sum D(augment(x))`` taken with respect to the un-augmented reals ``x`` (through the
        augmentation; double backward through it works)."""
        real = x.detach().requires_grad_(True)
        logits = self.run_D(real, c)
        return r1_penalty(logits, real), logits

    @torch.no_grad()
    def update_ema(self, global_batch: int) -> float:
        """Move ``G_ema`` towards ``G``; returns the decay used."""
        hp = self.hparams
        ema_nimg = (hp.ema_kimg if hp.ema_kimg is not None else global_batch * 10 / 32) * 1000
        if hp.ema_rampup is not None:
            ema_nimg = min(ema_nimg, float(self.images_seen) * hp.ema_rampup)
        beta = 0.5 ** (global_batch / max(ema_nimg, 1e-8))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)
        return beta

    def _batch(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        if isinstance(batch, dict):
            x = batch["image"]
            attrs = batch.get("attrs")
        elif isinstance(batch, (list, tuple)):
            x, attrs = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            x, attrs = batch, None
        c = None
        if self.G.c_dim > 0:
            if attrs is None or attrs.shape[-1] < self.G.c_dim:
                raise ConfigError(f"c_dim={self.G.c_dim} needs batches with 'attrs' of at least that many columns")
            c = attrs[:, : self.G.c_dim].float()
        return x, c

    def on_before_optimizer_step(self, optimizer) -> None:
        """The official ``nan_to_num`` of the gradients, right before every optimizer step. Lightning
        calls this after a mixed-precision gradient scaler has unscaled the gradients (and recorded
        any overflow, so it still skips that step and lowers its scale)."""
        sanitize_gradients(p for group in optimizer.param_groups for p in group["params"])

    def gan_step(self, batch: Any, batch_idx: int, opt_g: Any, opt_d: Any) -> dict[str, Tensor | float]:
        hp = self.hparams
        x, c = self._batch(batch)
        b = x.shape[0]
        global_batch = b * self._world_size()
        step = int(self.batches_seen)
        logs: dict[str, Tensor | float] = {}

        # --- G: main loss, then lazy path-length regularisation
        with self.toggled(opt_g):
            fake, _ = self.run_G(torch.randn(b, self.z_dim, device=x.device), c)
            loss_g = logistic_g_loss(self.run_D(fake, c))
            self.optimizer_update(opt_g, loss_g, "loss_G")
            logs["loss/G"] = loss_g.detach()
            if hp.pl_weight > 0 and step % hp.pl_interval == 0:
                n = max(1, b // hp.pl_batch_shrink)
                img, ws = self.run_G(torch.randn(n, self.z_dim, device=x.device), c[:n] if c is not None else None)
                penalty, _, new_mean = path_length_penalty(img, ws, self.pl_mean, hp.pl_decay)
                self.pl_mean.copy_(new_mean)
                loss_pl = (img[:, 0, 0, 0] * 0 + penalty * hp.pl_weight).mean() * hp.pl_interval
                self.optimizer_update(opt_g, loss_pl, "loss_Gpl")
                logs["loss/pl"] = penalty.detach().mean()
                logs["pl_mean"] = self.pl_mean.detach()

        # --- D: main loss, then lazy R1
        with self.toggled(opt_d):
            with torch.no_grad():
                fake, _ = self.run_G(torch.randn(b, self.z_dim, device=x.device), c)
            fake_logits = self.run_D(fake, c)
            real_logits = self.run_D(x.detach(), c)
            self.accumulate_ada(real_logits)
            loss_d = logistic_d_loss(real_logits, fake_logits)
            self.optimizer_update(opt_d, loss_d, "loss_D")
            logs["loss/D"] = loss_d.detach()
            logs["D/real"] = real_logits.detach().float().mean()
            logs["D/fake"] = fake_logits.detach().float().mean()
            if step % hp.r1_interval == 0:
                gamma = self.r1_gamma(global_batch)
                if gamma > 0:
                    penalty, logits = self.r1(x, c)
                    self.accumulate_ada(logits)  # the official Dreg pass reports its real signs too
                    loss_r1 = (logits * 0 + (penalty * (gamma / 2)).unsqueeze(1)).mean() * hp.r1_interval
                    self.optimizer_update(opt_d, loss_r1, "loss_Dr1")
                    logs["loss/r1"] = penalty.detach().mean()

        # --- bookkeeping: EMA, images seen, ADA
        logs["G_ema/beta"] = self.update_ema(global_batch)
        self.images_seen += global_batch
        self.batches_seen += 1
        if int(self.batches_seen) % hp.ada_interval == 0:
            rt = self.update_ada(global_batch)
            if rt is not None:
                logs["ada/rt"] = rt
        if self.augment_pipe is not None:
            logs["ada/p"] = float(self.augment_pipe.p)
        logs["kimg"] = float(self.images_seen) / 1000
        return logs


def _rename_old_ada_stats(state_dict, prefix, *args) -> None:
    """Checkpoints written before the ADA controller was shared kept its statistics as ``ada_stats``."""
    old, new = prefix + "ada_stats", prefix + "ada.stats"
    if old in state_dict and new not in state_dict:
        state_dict[new] = state_dict.pop(old)
