"""Method A, Phase 3: G3 (G1 grown) against a new D3 on feature-2 images, the frozen D2 keeping feature 1.

Losses (batch means; :mod:`multifeat.losses`), with ``x`` real images and ``y = G3(z)`` the fakes::

    L_D3 = (α1·mean((D3(x)-1)²) + α2·mean(D3(y)²) + α3·mean((D3(y) - D2(y))²)) / (α1+α2+α3)
    L_G3 = (β1·mean((D3(y)-1)²) + β2·mean((f(D2(y)) - 1)²)) / (β1+β2)

α = (1, 1, 0.1), β = (2, 30) by default (the paper's). ``f`` is ``identity`` (default) or ``hinge``
(:func:`multifeat.losses.make_f`). One batch = one D3 update then one G3 update on the same fakes.

**Networks.** ``G3`` (:attr:`generator`) is a :class:`~multifeat.nets.growth.GrownGenerator`: G1's
DCGAN generator (its weights from the Phase-1 checkpoint, the EMA copy when Phase 1 kept one and
``g1_use_ema``) plus residual blocks at the resolutions of ``add_blocks``, zero-initialised, so G3
starts exactly at G1. ``D3`` (:attr:`discriminator`) is a DCGAN discriminator, initialised from D1
(``d3_init_from_d1=True``, default) or fresh. ``D2`` (:attr:`d2`) is the Phase-2 feature classifier
(probabilities [N] in [0, 1]), **frozen**: eval mode always, ``requires_grad=False``, in no optimizer;
G3's loss back-propagates *through* it into G3.

**AdaIN addition.** At the start of epoch ``snapshot_epoch`` (0-based: after ``snapshot_epoch``
finished epochs; default 500) G3 is copied into the frozen generator ``H`` (:attr:`h`): the live G3
(``snapshot_source="live"``, default) or an exponential moving average of G3 (``"ema"``:
``ema <- d·ema + (1-d)·G3`` after every G3 update, ``d = snapshot_ema_decay``, BatchNorm statistics
copied; kept in the checkpoint as :attr:`g3_ema`), so that H is not one noisy point of the
adversarial trajectory. From then on (``adain_enabled``) the image of a noise ``z`` is, with the
default ``adain_content="h"``::

    feat<R>:  G3's stages up to R; its R x R map is replaced by AdaIN(content=H's map at R for the
              same z, style=G3's map); G3's later stages render the image
    image:    tanh(AdaIN(content=H's RGB map before tanh, style=G3's RGB map before tanh))

and this combined image is what D3, D2, both losses, :meth:`sample` and the evaluation see. AdaIN
keeps the *spatial layout* of its content and imposes the *per-channel statistics* of its style: H,
frozen when G3's faces should carry both features, keeps the layout while G3, trained on feature-1
images after the switch, sets the statistics. ``adain_content="g3"`` swaps the roles (G3's layout,
H's statistics). docs/method_a.md and docs/forgetting.md say what each choice does in practice.
The data switch from feature 2 to feature 1 at ``switch_epoch`` (default: the snapshot epoch) goes
through :class:`multifeat.data.switching.SwitchingDataModule`, which reads :attr:`data_switch_epoch`.

**Checkpoints and reloading.** The G1 / D2 files are read **only when the module is built from a
config** (``arch`` not given): their architectures are recorded in ``hparams["arch"]`` and their
weights loaded. Every weight (G3, D3, D2, H, the snapshot flag) is in the state dict, so
``load_from_checkpoint`` and ``multifeat generate`` rebuild the module from ``hparams["arch"]``
without ``g1_ckpt`` / ``d2_ckpt``; so does a resumed fit (:meth:`on_load_checkpoint`). A *fresh*
fit without them fails with a message naming the missing file and the phase that writes it.

Logged every ``trainer.log_every_n_steps`` batches: ``loss/d3``, ``loss/g3`` (progress bar), ``d2/fake_mean``
(does the fake keep feature 1?), ``d3/real_mean``, ``d3/fake_mean``, ``phase3/adain_active``, ``phase3/data_stage``.

Shapes: batches are dicts with ``"image"`` [B, 3, S, S] in [-1, 1]; ``sample(n)`` -> [n, 3, S, S].
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from multifeat.errors import CheckpointError, ConfigError
from multifeat.io.checkpoints import _import_class, checkpoint_meta, load_checkpoint, load_phase_module
from multifeat.losses import ALPHA_DEFAULT, BETA_DEFAULT, check_weights, make_f, phase3_d_loss, phase3_g_loss
from multifeat.nets.adain import adain
from multifeat.nets.dcgan import NORMS, DCGANDiscriminator, DCGANGenerator
from multifeat.nets.ema import EMA, check_decay
from multifeat.nets.growth import GrownGenerator, normalise_add_blocks, parse_point
from multifeat.phases.gan import (
    GANModule,
    batch_images,
    check_augment,
    check_betas,
    check_finite_every,
    check_lr,
    freeze,
)
from multifeat.utils.lightning_private import own_hyperparameters

#: the transformations of D2's views (probability multipliers of AugmentPipe): they move, rescale, mirror,
#: re-light and add noise to a face but keep its attributes (no quarter turns, no luma flip, no hue turn)
D2_VIEW_OPS = {"xflip": 1, "xint": 1, "scale": 1, "xfrac": 1, "brightness": 1, "contrast": 1, "saturation": 1, "noise": 1}


def check_d2_views(views: object, p: object, prefix: str = "") -> None:
    """Validate ``d2_views`` (an integer >= 0) and ``d2_view_p`` (a probability in (0, 1]); ``prefix``
    names where they were set (e.g. ``"method_a.phase3."``)."""
    if isinstance(views, bool) or not isinstance(views, int) or views < 0:
        raise ConfigError(f"{prefix}d2_views must be an integer >= 0 (0: D2 sees G3's images as drawn), got {views!r}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise ConfigError(f"{prefix}d2_view_p must be a probability in (0, 1], got {p!r}")


def d2_view_pipe(p: float = 0.8):
    """The differentiable pipe of D2's label-keeping views (``D2_VIEW_OPS``, each applied with
    probability ``p``; AugmentPipe's default strengths, noise std 0.05). A small frozen classifier is
    easily satisfied by pixel patterns that carry no feature; a pattern that must survive random
    shifts, zooms, mirroring, lighting and noise is harder to find (an expectation over
    transformations). Measured on MultiFeat-Synth (docs/forgetting.md): G3 kept feature 1 longer, then
    collapsed to few faces; not a cure on its own."""
    from multifeat.nets.stylegan2.augment import AugmentPipe

    return AugmentPipe(**D2_VIEW_OPS, noise_std=0.05, p=p)


class ScheduleWarning(UserWarning):
    """The run's length (``max_epochs`` / ``max_steps``) never reaches ``snapshot_epoch``: no H, no
    data switch, no AdaIN; the run trains G3 on feature-2 images only."""


#: where each input checkpoint comes from, for error messages: key -> (phase number, config)
_PRODUCERS = {"g1_ckpt": (1, "experiments/phase1.yaml"), "d2_ckpt": (2, "experiments/phase2.yaml")}


def _missing(key: str, path: str | None) -> CheckpointError:
    n, cfg = _PRODUCERS[key]
    if not path:
        return CheckpointError(f"{key} is not set: give the Phase-{n} checkpoint (written by `multifeat fit --config {cfg}`)")
    return CheckpointError(f"{key} '{path}' does not exist: run phase {n} first (`multifeat fit --config {cfg}`)")


def _exists(path: str | None) -> bool:
    return bool(path) and Path(path).is_file()


def _primitive(obj: Any) -> Any:
    """Keep only what a weights-only checkpoint can hold (dict/list/str/number/bool/None)."""
    if isinstance(obj, dict):
        return {k: _primitive(v) for k, v in obj.items() if isinstance(k, (str, int))}
    if isinstance(obj, (list, tuple)):
        return [_primitive(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def _rebuild(class_path: str, hparams: dict[str, Any]) -> nn.Module:
    """An instance of a package class from its recorded hyper-parameters (unknown keys dropped)."""
    cls = _import_class(class_path)
    if any(hparams.get(k) for k in ("custom_classifier", "custom_generator", "custom_discriminator")):
        raise CheckpointError(f"the recorded {cls.__name__} uses a network passed in by hand; Phase 3 cannot rebuild it")
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        hparams = {k: v for k, v in hparams.items() if k in params}
    return cls(**hparams)


class Phase3GAN(GANModule):
    """G3 (grown from G1) and D3 trained with the paper's α/β losses and the frozen D2; AdaIN after the snapshot.

    Args:
        g1_ckpt: Phase-1 checkpoint (G1, D1). Read only when ``arch`` is None (a fresh build).
        d2_ckpt: Phase-2 checkpoint (the feature classifier D2). Read likewise.
        add_blocks: residual blocks added to G1, ``{resolution: n}`` or ``[resolution, ...]``;
            None: one block at 16x16 (see :class:`~multifeat.nets.growth.GrownGenerator`).
        alpha: (α1, α2, α3) of L_D3. Default (1.0, 1.0, 0.1).
        beta: (β1, β2) of L_G3. Default (2.0, 30.0).
        f: ``identity`` (default) or ``hinge``; ``f_tau``: the hinge's threshold (default 0.9).
        lr_g, lr_d: Adam learning rates of G3 and D3. Default 2e-4.
        betas_g, betas_d: Adam betas. Default (0.5, 0.999).
        d3_init_from_d1: start D3 from D1's weights (True, default) or from DCGAN initialisation.
        d_width, norm_d: D3's width / normalisation when not initialised from D1 (None: D1's).
        g1_use_ema: take G1 from Phase 1's EMA generator when it kept one (default True).
        snapshot_epoch: epoch (0-based) at whose start G3 is copied into H; None: never. Default 500.
        snapshot_source: ``"live"`` (default: H = G3 at the snapshot) or ``"ema"`` (H = the EMA of G3).
        snapshot_ema_decay: decay of that EMA per G3 update, in [0, 1). Default 0.999.
        switch_epoch: first epoch trained on feature-1 images; None (default): ``snapshot_epoch``.
        adain_at: ``"feat<R>"`` (the R x R feature map of G3, e.g. ``"feat16"``, default) or ``"image"``.
        adain_enabled: combine G3 and H with AdaIN after the snapshot (default True).
        adain_content: ``"h"`` (default: H's layout, G3's statistics) or ``"g3"`` (the reverse).
        adain_eps: AdaIN's epsilon. Default 1e-5.
        num_fixed, fixed_seed: the fixed noise of :meth:`sample_fixed` (sample grids). Default 64, 0.
        finite_check_every_n_steps: run the non-finite guard on every n-th step; 0 disables it. Default 1.
        augment, augment_p, ada_target, ada_interval, ada_kimg: ADA for D3 (never the frozen D2), as in
            Phase1GAN (preset e.g. ``"bgc"``, None: off; p 0; target 0.6; interval 4; kimg 100).
        d2_views: 0 (default, the paper): D2 rates G3's images as drawn. k >= 1: the losses use the mean
            of D2 over k random label-keeping views of each image (:func:`d2_view_pipe`), against G3
            satisfying D2 with a fragile pixel pattern; ``d2/fake_plain_mean`` logs D2 on the images as drawn.
        d2_view_p: the probability of each transformation of a view (default 0.8).
        image_size: expected image side; None: G1's (a mismatch is an error; recorded once built).
        arch: architectures recorded from the checkpoints at the first build; leave None.
    """

    phase = "phase3"

    def __init__(
        self,
        g1_ckpt: str | None = None, d2_ckpt: str | None = None,
        add_blocks: dict[int, int] | list[int] | None = None,
        alpha: Sequence[float] = ALPHA_DEFAULT, beta: Sequence[float] = BETA_DEFAULT,
        f: str = "identity", f_tau: float = 0.9,
        lr_g: float = 2e-4, lr_d: float = 2e-4,
        betas_g: Sequence[float] = (0.5, 0.999), betas_d: Sequence[float] = (0.5, 0.999),
        d3_init_from_d1: bool = True,
        d_width: int | None = None, norm_d: str | None = None,
        g1_use_ema: bool = True,
        snapshot_epoch: int | None = 500, switch_epoch: int | None = None,
        snapshot_source: str = "live", snapshot_ema_decay: float = 0.999,
        adain_at: str = "feat16",
        adain_enabled: bool = True,
        adain_content: str = "h", adain_eps: float = 1e-5,
        num_fixed: int = 64, fixed_seed: int = 0,
        finite_check_every_n_steps: int = 1,
        image_size: int | None = None,
        arch: dict[str, Any] | None = None,
        augment: str | None = None, augment_p: float = 0.0, ada_target: float | None = 0.6,
        ada_interval: int = 4, ada_kimg: float = 100,
        d2_views: int = 0, d2_view_p: float = 0.8,
    ) -> None:
        super().__init__()
        self._f = make_f(f, f_tau)
        check_lr("lr_g", lr_g)
        check_lr("lr_d", lr_d)
        check_finite_every(finite_check_every_n_steps)
        for name, e in (("snapshot_epoch", snapshot_epoch), ("switch_epoch", switch_epoch)):
            if e is not None and (isinstance(e, bool) or not isinstance(e, int) or e < 0):
                raise ConfigError(f"{name} must be an integer >= 0 or null, got {e!r}")
        if snapshot_source not in ("live", "ema"):
            raise ConfigError(f"snapshot_source must be 'live' (H = G3) or 'ema' (H = an EMA of G3), got {snapshot_source!r}")
        check_decay(snapshot_ema_decay, "snapshot_ema_decay")
        if adain_content not in ("g3", "h"):
            raise ConfigError(f"adain_content must be 'h' (H content, G3 style) or 'g3' (the reverse), got {adain_content!r}")
        if norm_d is not None and norm_d not in NORMS:
            raise ConfigError(f"norm_d must be one of {NORMS}, got {norm_d!r}")
        if num_fixed < 1:
            raise ConfigError(f"num_fixed must be >= 1, got {num_fixed}")
        # image_size is recorded once known (G1's, in _build): the initial (logged) hyper-parameters
        # leave it out, so an unset size never conflicts with the data module's
        self._requested_image_size = image_size
        check_augment(augment, augment_p, ada_target, ada_interval, ada_kimg)
        check_d2_views(d2_views, d2_view_p)
        self.save_hyperparameters(ignore=["image_size"])
        self.hparams.update(
            alpha=check_weights("alpha", alpha, 3),
            beta=check_weights("beta", beta, 2),
            betas_g=check_betas(betas_g, "betas_g"),
            betas_d=check_betas(betas_d, "betas_d"),
        )
        self.generator: GrownGenerator | None = None
        self.discriminator: DCGANDiscriminator | None = None
        self.d2: nn.Module | None = None
        self.h: GrownGenerator | None = None
        self.g3_ema: EMA | None = None
        # state that must survive a resume: whether H holds the snapshot, and when it was taken
        self.register_buffer("snapshot_taken", torch.zeros((), dtype=torch.bool))
        self.register_buffer("snapshot_at_epoch", torch.full((), -1, dtype=torch.long))
        # D3 (not the frozen D2) sees reals and fakes through the ADA pipeline
        self.setup_augment(augment, augment_p, ada_target, ada_interval, ada_kimg)
        # D2 rates G3's images through random label-keeping views (see d2_score)
        self.d2_view_pipe = d2_view_pipe(float(d2_view_p)) if d2_views > 0 else None
        if arch is not None:
            self._build(arch)
        elif _exists(g1_ckpt) and _exists(d2_ckpt):
            self._build_from_checkpoints()
        elif g1_ckpt is None or d2_ckpt is None:
            raise _missing("g1_ckpt" if g1_ckpt is None else "d2_ckpt", None)
        # else: the files are missing. Building waits for on_load_checkpoint (a resumed fit); a fresh
        # fit reports the missing file in configure_optimizers.

    # ------------------------------------------------------------------------------------- building
    @property
    def built(self) -> bool:
        return self.generator is not None

    def check_ready(self) -> None:
        """Refuse to sample or train before the networks exist (a missing g1_ckpt / d2_ckpt)."""
        if not self.built:
            for key in ("g1_ckpt", "d2_ckpt"):
                if not _exists(self.hparams[key]):
                    raise _missing(key, self.hparams[key])
            raise CheckpointError("Phase3GAN was not built")  # pragma: no cover

    def _build_from_checkpoints(self) -> None:
        hp = self.hparams
        g1_path, d2_path = str(hp.g1_ckpt), str(hp.d2_ckpt)
        ck1 = load_checkpoint(g1_path, expect_phase="phase1")
        ck2 = load_checkpoint(d2_path, expect_phase="phase2")
        s1, s2 = checkpoint_meta(ck1).get("image_size"), checkpoint_meta(ck2).get("image_size")
        if s1 is not None and s2 is not None and int(s1) != int(s2):
            raise CheckpointError(f"d2_ckpt '{d2_path}' classifies {s2}x{s2} images but g1_ckpt '{g1_path}' generates "
                                  f"{s1}x{s1} images; train phase 2 at the image size of phase 1")
        del ck1, ck2
        with own_hyperparameters():
            p1 = load_phase_module(g1_path, expect_phase="phase1")
            p2 = load_phase_module(d2_path, expect_phase="phase2")
        use_ema = bool(hp.g1_use_ema) and getattr(p1, "ema", None) is not None
        g1 = p1.ema.module if use_ema else p1.generator
        d1 = p1.discriminator
        if not isinstance(g1, DCGANGenerator):
            raise CheckpointError(f"g1_ckpt '{g1_path}' holds a {type(g1).__name__} generator; Phase 3 grows a DCGANGenerator")
        arch: dict[str, Any] = {
            "g1": {"z_dim": g1.z_dim, "image_size": g1.image_size, "width": g1.width, "max_width": g1.max_width, "norm": g1.norm,
                   "upsample": g1.upsample},
            "g1_source": "ema" if use_ema else "generator",
            "d2": {"class_path": f"{type(p2).__module__}.{type(p2).__qualname__}", "hparams": _primitive(dict(p2.hparams))},
        }
        if hp.d3_init_from_d1:
            if not isinstance(d1, DCGANDiscriminator):
                raise CheckpointError(
                    f"g1_ckpt '{g1_path}' holds a {type(d1).__name__} discriminator; d3_init_from_d1 needs a "
                    "DCGANDiscriminator (set d3_init_from_d1: false)"
                )
            arch["d3"] = {"image_size": d1.image_size, "width": d1.width, "max_width": d1.max_width, "norm": d1.norm}
        else:
            like = d1 if isinstance(d1, DCGANDiscriminator) else None
            arch["d3"] = {"image_size": g1.image_size, "width": int(hp.d_width or (like.width if like else 64)),
                          "max_width": like.max_width if like else g1.max_width,
                          "norm": hp.norm_d or (like.norm if like else "batch")}
        self._build(arch)
        # weights: G1 into G3's base (and so into H), D1 into D3, the classifier into D2
        self.generator.base.load_state_dict(g1.state_dict())
        if hp.d3_init_from_d1:
            self.discriminator.load_state_dict(d1.state_dict())
        self.d2.load_state_dict(p2.state_dict())
        self.h.load_state_dict(self.generator.state_dict())
        if self.g3_ema is not None:
            self.g3_ema.copy_from(self.generator)
        freeze(self.d2)
        freeze(self.h)

    def _build(self, arch: dict[str, Any]) -> None:
        """Build G3, D3, D2 and H from the recorded architectures (weights: initial values)."""
        hp = self.hparams
        try:
            g1 = DCGANGenerator(**arch["g1"])
            d3 = DCGANDiscriminator(**arch["d3"])
            with own_hyperparameters():
                d2 = _rebuild(arch["d2"]["class_path"], arch["d2"]["hparams"])
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"Phase3GAN: the recorded architecture is incomplete or unreadable ({e})") from e
        size = g1.image_size
        wanted = self._requested_image_size
        if wanted is not None and int(wanted) != size:
            raise ConfigError(f"image_size={wanted} but g1_ckpt '{hp.g1_ckpt}' generates {size}x{size} images")
        d2_size = getattr(d2, "hparams", {}).get("image_size") if hasattr(d2, "hparams") else None
        if d2_size is not None and int(d2_size) != size:
            raise CheckpointError(f"d2_ckpt '{hp.d2_ckpt}' classifies {d2_size}x{d2_size} images but g1_ckpt "
                                  f"'{hp.g1_ckpt}' generates {size}x{size} images; train phase 2 at the image size of phase 1")
        self.generator = GrownGenerator(g1, hp.add_blocks)
        self.discriminator = d3
        self.d2 = freeze(d2)
        self.h = freeze(copy.deepcopy(self.generator))
        if hp.snapshot_source == "ema":
            self.g3_ema = EMA(self.generator, float(hp.snapshot_ema_decay))
        self._point = parse_point(hp.adain_at, self.generator.resolutions)
        self.z_dim = g1.z_dim
        self.hparams.update(
            arch=arch,
            image_size=size,
            add_blocks=normalise_add_blocks(self.generator.add_blocks, self.generator.resolutions),
        )
        self.register_fixed_noise(hp.num_fixed, g1.z_dim, hp.fixed_seed)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # refuses another phase's or image size's checkpoint
        # A resumed fit whose G1/D2 files are gone: build from the checkpoint's recorded architectures.
        if not self.built:
            arch = (checkpoint.get("hyper_parameters") or {}).get("arch")
            if not arch:
                raise CheckpointError("the checkpoint being resumed records no Phase-3 architecture (hparams 'arch')")
            self._build(arch)

    def train(self, mode: bool = True) -> Phase3GAN:
        """Set train/eval mode; D2 and H stay in eval mode always (frozen)."""
        super().train(mode)
        for frozen in (self.d2, self.h):
            if frozen is not None:
                frozen.eval()
        return self

    # ------------------------------------------------------------------------------------- schedule
    @property
    def data_switch_epoch(self) -> int | None:
        """First epoch (0-based) trained on feature-1 images (read by SwitchingDataModule)."""
        s = self.hparams.switch_epoch
        return int(s) if s is not None else (None if self.hparams.snapshot_epoch is None else int(self.hparams.snapshot_epoch))

    @property
    def adain_active(self) -> bool:
        """True once H holds the snapshot and AdaIN is enabled."""
        return bool(self.hparams.adain_enabled) and bool(self.snapshot_taken)

    @torch.no_grad()
    def take_snapshot(self) -> None:
        """Copy G3, or its EMA with ``snapshot_source="ema"`` (weights and batch-norm statistics), into the frozen H."""
        self.check_ready()
        source = self.g3_ema.module if self.g3_ema is not None else self.generator
        self.h.load_state_dict(source.state_dict())
        freeze(self.h)
        self.snapshot_taken.fill_(True)
        self.snapshot_at_epoch.fill_(int(self.current_epoch) if self._trainer is not None else -1)

    def on_train_epoch_start(self) -> None:
        e = self.hparams.snapshot_epoch
        if e is not None and not bool(self.snapshot_taken) and self.current_epoch >= int(e):
            self.take_snapshot()

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        size = getattr(dm, "image_size", None) if dm is not None else None
        if size is not None and int(size) != int(self.hparams.image_size):
            raise ConfigError(
                f"the data module serves {size}x{size} images but G1 (g1_ckpt '{self.hparams.g1_ckpt}') generates "
                f"{self.hparams.image_size}x{self.hparams.image_size}; set data image_size: {self.hparams.image_size}"
            )
        s = self.data_switch_epoch
        max_epochs = self.trainer.max_epochs
        if s is not None and (max_epochs is None or max_epochs < 0 or s < max_epochs) and not hasattr(dm, "stage_at"):
            rank_zero_warn(
                f"Phase3GAN switches to feature-1 data at epoch {s}, but the data module ({type(dm).__name__}) does "
                "not switch; use multifeat.data.switching.SwitchingDataModule for the paper's schedule"
            )

    def on_train_start(self) -> None:
        """Warn (:class:`ScheduleWarning`) when ``max_epochs`` / ``max_steps`` end the run before the snapshot."""
        message = self.snapshot_schedule_problem(
            self.trainer.max_epochs, self.trainer.max_steps, self.trainer.num_training_batches,
            int(self.current_epoch), int(self.global_step),
        )
        if message:
            rank_zero_warn(message, category=ScheduleWarning)

    def snapshot_schedule_problem(self, max_epochs: int | None, max_steps: int | None, batches_per_epoch: float,
                                  epoch: int = 0, step: int = 0) -> str | None:
        """Why a run of this length starting at ``epoch`` / ``step`` never reaches ``snapshot_epoch``
        (one line), or None when it does (or there is no snapshot, or it was taken already).

        The snapshot is taken at the start of epoch ``snapshot_epoch`` (0-based), i.e. after
        ``snapshot_epoch`` finished epochs: ``max_epochs <= snapshot_epoch`` never gets there, nor does
        ``max_steps <= step + (snapshot_epoch - epoch) * batches_per_epoch`` (one step per batch).
        """
        s = self.hparams.snapshot_epoch
        if s is None or bool(self.snapshot_taken):
            return None
        s = int(s)
        tail = "so there is no snapshot H, no data switch to feature 1 and no AdaIN"
        if max_epochs is not None and 0 <= max_epochs <= s:
            return (f"Phase3GAN: snapshot_epoch={s} is never reached: max_epochs={max_epochs} stops the run after epoch "
                    f"{max_epochs - 1} (epochs count from 0), {tail}; set snapshot_epoch below max_epochs "
                    f"(e.g. --model.init_args.snapshot_epoch {max(0, (max_epochs * 5) // 8)}) or raise max_epochs")
        finite = batches_per_epoch is not None and batches_per_epoch != float("inf") and batches_per_epoch > 0
        if max_steps is not None and max_steps >= 0 and finite:
            need = int(step + max(0, s - epoch) * int(batches_per_epoch))
            if max_steps <= need:
                return (f"Phase3GAN: snapshot_epoch={s} is never reached: max_steps={max_steps} ends the run before step "
                        f"{need + 1} ({int(batches_per_epoch)} batches per epoch), {tail}; set max_steps above {need} "
                        "or lower snapshot_epoch")
        return None

    # ------------------------------------------------------------------------------------- generation
    def _combine(self, z: torch.Tensor, hook=None) -> torch.Tensor:
        """The image of noise ``z`` [N, z_dim]: G3's, or after the snapshot G3 and H through AdaIN.

        ``hook(res, h)``, if given, sees (and may replace) G3's feature maps after the combination.
        """
        g3 = self.generator
        if not self.adain_active:
            return g3(z, hook=hook)
        eps = float(self.hparams.adain_eps)
        g3_content = self.hparams.adain_content == "g3"
        if self._point == "image":
            with torch.no_grad():
                h_map = self.h.pre_tanh(z)
            g_map = g3.pre_tanh(z, hook=hook)
            return torch.tanh(adain(g_map, h_map, eps) if g3_content else adain(h_map, g_map, eps))
        point = self._point
        with torch.no_grad():
            h_feat = self.h.features(z, point)

        def combine(res: int, x: torch.Tensor) -> torch.Tensor:
            if res == point:
                x = adain(x, h_feat, eps) if g3_content else adain(h_feat, x, eps)
            return hook(res, x) if hook is not None else x

        return g3(z, hook=combine)

    def forward(self, z: torch.Tensor, hook=None) -> torch.Tensor:
        """The Phase-3 image of ``z`` [N, z_dim] -> [N, 3, S, S] (current train/eval mode).

        ``hook(res, h)``: optional inspection hook on G3's feature maps (after the AdaIN at its point).
        """
        self.check_ready()
        return self._combine(z, hook=hook)

    def d2_prob(self, images: torch.Tensor) -> torch.Tensor:
        """D2's probability that ``images`` carry feature 1: [N] in [0, 1] (gradients reach the images)."""
        p = self.d2(images)
        return p.reshape(p.shape[0], -1)[:, 0] if p.ndim > 1 else p

    def d2_score(self, images: torch.Tensor) -> torch.Tensor:
        """D2's verdict on G3's ``images`` as the losses use it: :meth:`d2_prob` of the images as drawn
        (``d2_views`` 0), else its mean over ``d2_views`` random label-keeping views of each image
        (:func:`d2_view_pipe`; differentiable). [N] in [0, 1]."""
        if self.d2_view_pipe is None:
            return self.d2_prob(images)
        return torch.stack([self.d2_prob(self.d2_view_pipe(images)) for _ in range(int(self.hparams.d2_views))]).mean(0)

    def generate(self, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Images of ``z`` in eval mode (training mode restored after): [N, 3, S, S] in [-1, 1],
        combined through AdaIN once H exists."""
        self.check_ready()
        return self.run_in_eval(self.generator, self._combine, [z], batch_size)

    # ------------------------------------------------------------------------------------- training
    progress_bar_keys = ("loss/d3", "loss/g3", "d2/fake_mean")

    def gan_step(self, batch: Any, batch_idx: int, opt_g: Any, opt_d: Any) -> dict[str, Any]:
        x = batch_images(batch)
        hp = self.hparams
        z = torch.randn(x.shape[0], self.z_dim, device=x.device)
        fake = self._combine(z)

        # --- D3: real -> 1, fake -> 0, and towards D2's verdict on the fake (α3)
        with self.toggled(opt_d):
            d3_real = self.discriminator(self.d_input(x))
            d3_fake = self.discriminator(self.d_input(fake.detach()))
            with torch.no_grad():
                d2_fake = self.d2_score(fake.detach())
                d2_plain = self.d2_prob(fake.detach()) if self.d2_view_pipe is not None else d2_fake
            loss_d = phase3_d_loss(d3_real, d3_fake, d2_fake, hp.alpha)
            self.optimizer_update(opt_d, loss_d, "loss_d3")
        self.observe_real(d3_real)

        # --- G3: fool D3 (β1) and make the frozen D2 see feature 1 (β2, through f)
        with self.toggled(opt_g):
            loss_g = phase3_g_loss(self.discriminator(self.d_input(fake)), self.d2_score(fake), hp.beta, self._f)
            self.optimizer_update(opt_g, loss_g, "loss_g3")
        if self.g3_ema is not None:
            self.g3_ema.update(self.generator)

        s = self.data_switch_epoch
        return {
            "loss/d3": loss_d.detach(),
            "loss/g3": loss_g.detach(),
            "d2/fake_mean": d2_fake.float().mean(),
            **({"d2/fake_plain_mean": d2_plain.float().mean()} if self.d2_view_pipe is not None else {}),
            "d3/real_mean": d3_real.detach().float().mean(),
            "d3/fake_mean": d3_fake.detach().float().mean(),
            "phase3/adain_active": float(self.adain_active),
            "phase3/data_stage": float(s is not None and self.current_epoch >= s),
            **self.ada_step(x.shape[0]),
        }
