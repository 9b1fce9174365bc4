"""The conditional-GAN baseline: one generator conditioned on multi-hot attribute labels.

The benchmark trains it on data where no image carries the target combination (e.g. no face is
both bald and bearded) and then samples it *at* that combination: ``sample(n, labels={"bald": True,
"beard": True})``. It answers the question "does plain label conditioning already compose
features?", against which Method A and Method B are measured.

Networks (:mod:`multifeat.nets.conditional`): a DCGAN generator conditioned by a label embedding
concatenated to ``z``, and a projection discriminator
``D(x, y) = psi(phi(x)) + <V y, phi(x)>`` (Miyato & Koyama 2018, multi-label form). Losses: LSGAN
(:func:`multifeat.losses.lsgan_d_loss`, :func:`multifeat.losses.lsgan_g_loss`), as in Method A.

Training data: dict batches ``{"image": [B, 3, S, S] in [-1, 1], "attrs": [B, A_all] 0/1}`` from
:class:`multifeat.data.AttributeDataModule`. ``attributes`` names the ``attrs`` columns used as
labels; columns are looked up by name in the data module's ``attribute_names`` when training
starts, so the data's column order does not matter. The labels of the fakes in a step are the real
batch's labels in a random order: the generator is trained only on label combinations that occur in
the data, in their empirical proportions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from multifeat.data.common import ATTRIBUTES
from multifeat.errors import ConfigError, DataError
from multifeat.losses import lsgan_d_loss, lsgan_g_loss
from multifeat.nets.conditional import ConditionalGenerator, ProjectionDiscriminator
from multifeat.nets.dcgan import check_image_size
from multifeat.phases.gan import GANModule, check_betas, check_finite_every, check_lr

DEFAULT_ATTRIBUTES = ("bald", "beard")


def _package_attributes() -> tuple[str, ...]:
    return tuple(ATTRIBUTES)


def _flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ConfigError(f"{what}: value {value!r} is not a binary flag; use true or false")


def _check_names(names: Any, what: str) -> list[str]:
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise ConfigError(f"{what} must be a non-empty list of attribute names, got {names!r}")
    names = list(names)
    if not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{what} must hold non-empty strings, got {names!r}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{what} names {', '.join(dup)} more than once")
    return names


class ConditionalGAN(GANModule):
    """Conditional LSGAN with a projection discriminator, conditioned on multi-hot attribute labels.

    Args:
        attributes: the conditioning labels, names of ``attrs`` columns (default ``["bald", "beard"]``).
        sample_labels: labels :meth:`sample` uses when none are given, ``{name: bool}`` over
            ``attributes``; names left out are False. ``None`` (default) = every attribute True, i.e.
            bald AND beard for the default attributes: the combination the benchmark asks for.
        attribute_names: names of the ``attrs`` columns of the data, in order. ``None`` (default):
            the package's ``multifeat.data.ATTRIBUTES`` for checking ``attributes`` now, and the data
            module's ``attribute_names`` when training starts. Set it when the data has other names.
        image_size: image side, a power of two in [16, 256] (64).
        z_dim: noise dimension (128).
        g_width, d_width: channels of the full-resolution stage of G / first layer of D (64, 64).
        max_width: channel cap of both networks (512).
        norm_g, norm_d: ``batch`` / ``instance`` / ``none`` (``batch``, ``none``). With batch norm in D
            the LSGAN mode-collapsed on 32 px synthetic faces, with and without labels.
        embed_dim: size of G's label embedding concatenated to ``z`` (32).
        film: per-stage label modulation in G (False: with it G learned to ignore ``z``; see
            :mod:`multifeat.nets.conditional`).
        upsample: G's upsampling, ``transpose`` or ``nearest`` (``transpose``; as
            :class:`~multifeat.phases.phase1.Phase1GAN`'s).
        lr_g, lr_d: Adam learning rates (2e-4, 2e-4).
        betas_g, betas_d: Adam betas ((0.5, 0.999), DCGAN's).
        finite_check_every_n_steps: run the non-finite guard on every n-th step; 0 disables (1).
        augment, augment_p, ada_target, ada_interval, ada_kimg: ADA for the projection discriminator: the
            :class:`~multifeat.nets.stylegan2.augment.AugmentPipe` preset (e.g. ``"bgc"``; None, the
            default, builds nothing), the initial p (0), the target of ``E[sign(D(real) - 0.5)]``
            (0.6; None keeps p fixed), batches between p updates (4), kimg for p to move by 1 (100).
            See :mod:`multifeat.phases.gan`.
        num_fixed, fixed_seed: the fixed noise of :meth:`sample_fixed` (sample grids, at ``sample_labels``):
            ``sample_fixed()`` equals ``sample(num_fixed, seed=fixed_seed)``. Default 64, 0.

    Network sizes, learning rates and the step counting match :class:`~multifeat.phases.phase1.Phase1GAN`
    (one D and one G update per batch; ``trainer.global_step`` counts batches), so the baseline and
    Method A's phases compare at equal budgets.

    Logged on the steps the logger writes (every ``trainer.log_every_n_steps`` batches): ``loss/d``, ``loss/g`` (progress bar), ``d/real_mean`` (mean D(x, y)),
    ``d/fake_mean`` (mean D(G(z, y'), y') before the D update).

    All hyper-parameters are primitives, so checkpoints load with ``weights_only=True``.
    """

    phase = "cgan"

    def __init__(
        self,
        attributes: Sequence[str] = DEFAULT_ATTRIBUTES,
        sample_labels: dict[str, bool] | None = None,
        attribute_names: Sequence[str] | None = None,
        image_size: int = 64,
        z_dim: int = 128,
        g_width: int = 64,
        d_width: int = 64,
        max_width: int = 512,
        norm_g: str = "batch",
        norm_d: str = "none",
        embed_dim: int = 32,
        film: bool = False,
        upsample: str = "transpose",
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas_g: tuple[float, float] = (0.5, 0.999),
        betas_d: tuple[float, float] = (0.5, 0.999),
        finite_check_every_n_steps: int = 1,
        num_fixed: int = 64,
        fixed_seed: int = 0,
        augment: str | None = None,
        augment_p: float = 0.0,
        ada_target: float | None = 0.6,
        ada_interval: int = 4,
        ada_kimg: float = 100,
    ) -> None:
        super().__init__()
        check_image_size(image_size)
        attributes = _check_names(attributes, "attributes")
        if attribute_names is not None:
            attribute_names = _check_names(attribute_names, "attribute_names")
        valid = list(attribute_names) if attribute_names is not None else list(_package_attributes())
        unknown = [a for a in attributes if a not in valid]
        if unknown:
            raise ConfigError(
                f"attributes: unknown attribute name(s) {', '.join(repr(u) for u in unknown)}; "
                f"valid names: {', '.join(valid)}"
                + ("" if attribute_names is not None else " (set attribute_names if your data uses other names)")
            )
        check_lr("lr_g", lr_g)
        check_lr("lr_d", lr_d)
        betas_g, betas_d = check_betas(betas_g, "betas_g"), check_betas(betas_d, "betas_d")
        check_finite_every(finite_check_every_n_steps)
        if isinstance(num_fixed, bool) or not isinstance(num_fixed, int) or num_fixed < 1:
            raise ConfigError(f"num_fixed must be an integer >= 1, got {num_fixed!r}")
        self.attributes = attributes
        # validates sample_labels against `attributes` (names and flags)
        self._default_labels = self._labels_from_dict(
            {a: True for a in attributes} if sample_labels is None else sample_labels, "sample_labels"
        )
        self.save_hyperparameters()
        # primitives only (checkpoints are read weights-only)
        self.hparams["attributes"] = list(attributes)
        self.hparams["betas_g"] = betas_g
        self.hparams["betas_d"] = betas_d
        if attribute_names is not None:
            self.hparams["attribute_names"] = list(attribute_names)
        if sample_labels is not None:
            self.hparams["sample_labels"] = {k: _flag(v, "sample_labels") for k, v in sample_labels.items()}

        a = len(attributes)
        self.generator = ConditionalGenerator(
            num_labels=a, z_dim=z_dim, image_size=image_size, width=g_width, max_width=max_width,
            norm=norm_g, embed_dim=embed_dim, film=film, upsample=upsample,
        )
        self.discriminator = ProjectionDiscriminator(
            num_labels=a, image_size=image_size, width=d_width, max_width=max_width, norm=norm_d
        )
        self.register_fixed_noise(num_fixed, z_dim, fixed_seed)
        self.setup_augment(augment, augment_p, ada_target, ada_interval, ada_kimg)
        self._columns: list[int] | None = None
        self._num_columns: int | None = None

    # ------------------------------------------------------------------------------------- labels
    def _labels_from_dict(self, labels: Mapping[str, Any], what: str = "labels") -> torch.Tensor:
        """``{name: flag}`` over ``attributes`` -> float [A] (names left out are 0)."""
        if not isinstance(labels, Mapping):
            raise ConfigError(f"{what} must be a mapping like {{'bald': true, 'beard': true}}, got {type(labels).__name__}")
        unknown = [k for k in labels if k not in self.attributes]
        if unknown:
            raise ConfigError(
                f"{what}: unknown label name(s) {', '.join(repr(u) for u in unknown)}; "
                f"this model is conditioned on: {', '.join(self.attributes)}"
            )
        vec = torch.zeros(len(self.attributes))
        for k, v in labels.items():
            vec[self.attributes.index(k)] = float(_flag(v, f"{what}['{k}']"))
        return vec

    def labels_tensor(self, labels: Mapping[str, Any] | torch.Tensor | None, n: int) -> torch.Tensor:
        """Labels for ``n`` samples as float [n, A] on the module's device.

        ``labels``: ``None`` (``sample_labels``), ``{name: bool}``, a tensor [A] (same for all) or [n, A].
        """
        a = len(self.attributes)
        if labels is None:
            y = self._default_labels
        elif isinstance(labels, Mapping):
            y = self._labels_from_dict(labels)
        elif isinstance(labels, torch.Tensor):
            y = labels.detach().float().cpu()
            if not (y.shape == (a,) or y.shape == (n, a)):
                raise ConfigError(
                    f"labels tensor must have shape [{a}] or [{n}, {a}] (attributes: {', '.join(self.attributes)}), "
                    f"got {list(y.shape)}"
                )
        else:
            raise ConfigError(f"labels must be None, a {{name: bool}} mapping or a tensor, got {type(labels).__name__}")
        return y.expand(n, a).to(self.device).contiguous() if y.dim() == 1 else y.to(self.device)

    def resolve_columns(self, names: Sequence[str] | None = None) -> list[int]:
        """Indices of ``attributes`` in the data's ``attrs`` columns ``names`` (default: the data
        module's ``attribute_names``, else ``attribute_names``, else the package's ATTRIBUTES)."""
        if names is None:
            dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
            names = getattr(dm, "attribute_names", None)
        if names is None:
            names = self.hparams.get("attribute_names") or _package_attributes()
        names = list(names)
        missing = [a for a in self.attributes if a not in names]
        if missing:
            raise ConfigError(
                f"attributes: {', '.join(repr(m) for m in missing)} not among the data's attribute columns; "
                f"valid names: {', '.join(names)}"
            )
        self._columns = [names.index(a) for a in self.attributes]
        self._num_columns = len(names)
        return self._columns

    def setup(self, stage: str) -> None:
        self.resolve_columns()

    def batch_labels(self, attrs: torch.Tensor) -> torch.Tensor:
        """The conditioning columns of a batch's ``attrs`` [B, A_all] -> float [B, A]."""
        if self._columns is None:
            self.resolve_columns()
        if attrs.dim() != 2 or attrs.shape[1] != self._num_columns:
            raise DataError(
                f"batch 'attrs' must have shape [B, {self._num_columns}] (one column per data attribute), got {list(attrs.shape)}"
            )
        return attrs[:, self._columns].float()

    # ------------------------------------------------------------------------------------- model
    @property
    def z_dim(self) -> int:
        return self.generator.z_dim

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``G(z [N, z_dim], labels [N, A]) -> [N, 3, S, S]`` in [-1, 1]."""
        return self.generator(z, labels)

    progress_bar_keys = ("loss/d", "loss/g")

    def gan_step(self, batch: dict[str, torch.Tensor], batch_idx: int, opt_g: Any, opt_d: Any) -> dict[str, torch.Tensor]:
        real = batch["image"]
        y_real = self.batch_labels(batch["attrs"]).to(real.dtype)
        n = real.shape[0]
        # fakes get the real batch's label combinations, shuffled: only combinations the data holds
        y_fake = y_real[torch.randperm(n, device=real.device)]
        z = self.generator.sample_z(n, device=real.device).to(real.dtype)
        fake = self.generator(z, y_fake)  # built before the toggles, so it keeps its graph to G

        # --- D: (x, y) -> 1, (G(z, y'), y') -> 0
        with self.toggled(opt_d):
            d_real = self.discriminator(self.d_input(real), y_real)
            d_fake = self.discriminator(self.d_input(fake.detach()), y_fake)
            loss_d = lsgan_d_loss(d_real, d_fake)
            self.optimizer_update(opt_d, loss_d, "loss_d")
        self.observe_real(d_real)

        # --- G: D(G(z, y'), y') -> 1, on the same fakes through the updated D (frozen here)
        with self.toggled(opt_g):
            loss_g = lsgan_g_loss(self.discriminator(self.d_input(fake), y_fake))
            self.optimizer_update(opt_g, loss_g, "loss_g")

        return {"loss/d": loss_d.detach(), "loss/g": loss_g.detach(),
                "d/real_mean": d_real.detach().float().mean(), "d/fake_mean": d_fake.detach().float().mean(),
                **self.ada_step(n)}

    # ------------------------------------------------------------------------------------- sampling
    def generate(self, z: torch.Tensor, labels: Mapping[str, Any] | torch.Tensor | None = None,
                 batch_size: int = 256) -> torch.Tensor:
        """Images [N, 3, S, S] in [-1, 1] of noise ``z`` [N, z_dim] at ``labels`` (see :meth:`sample`),
        generator in eval mode (its mode is restored)."""
        y = self.labels_tensor(labels, z.shape[0])
        return self.run_in_eval(self.generator, self.generator, [z, y], batch_size).float().clamp_(-1.0, 1.0)

    def sample(
        self,
        n: int,
        seed: int | None = None,
        labels: Mapping[str, Any] | torch.Tensor | None = None,
        batch_size: int = 256,
    ) -> torch.Tensor:
        """``n`` images [n, 3, S, S] in [-1, 1] on the module's device, generated at ``labels``.

        Args:
            n: number of images (>= 0).
            seed: noise seed; the same seed and labels give the same noise on every device (it is
                drawn on the CPU) and the same images on the CPU (on a GPU, up to its convolution
                kernels' nondeterminism). ``None``: torch's global generator.
            labels: ``None`` -> ``sample_labels`` (default: all attributes True, e.g. bald AND beard);
                ``{name: bool}`` over ``attributes`` (names left out are False); or a tensor [A] / [n, A].
            batch_size: images per forward pass (256); does not change the result.

        The generator runs in eval mode (batch-norm running statistics) and its mode is restored.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"n must be a non-negative integer, got {n!r}")
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        return self.generate(self.generator.sample_z(n, generator=gen), labels, batch_size)
