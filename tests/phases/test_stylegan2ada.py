"""StyleGAN2ADA phase: official R1 through the augmentation, ADA controller, gradient clean-up,
lazy Adam, a short fit + checkpoint."""

from __future__ import annotations

from dataclasses import replace

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from multifeat.errors import NonFiniteLossError
from multifeat.io.checkpoints import load_checkpoint
from multifeat.losses import r1_penalty
from multifeat.nets.stylegan2.augment import AdaptiveP, AugmentParams, AugmentPipe
from multifeat.phases.stylegan2ada import (
    StyleGAN2ADA,
    ada_adjust,
    lazy_adam_settings,
    sanitize_gradients,
)

TINY = dict(image_size=8, z_dim=8, w_dim=8, channel_base=64, channel_max=8, mbstd_group_size=2, num_fixed=4)


def test_lazy_adam_settings_and_optimizers():
    lr, betas = lazy_adam_settings(0.0025, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.0025 * 16 / 17) and betas == pytest.approx((0.0, 0.99 ** (16 / 17)))
    assert lazy_adam_settings(0.002, (0.5, 0.9), None) == (0.002, (0.5, 0.9))
    module = StyleGAN2ADA(**TINY, augment=None)
    opt_g, opt_d = module.configure_optimizers()
    assert opt_g.param_groups[0]["lr"] == pytest.approx(0.0025 * 4 / 5)
    assert opt_g.param_groups[0]["betas"][1] == pytest.approx(0.99 ** 0.8)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(0.0025 * 16 / 17)
    assert module.r1_gamma(32) == pytest.approx(0.0002 * 64 / 32)


class _FixedPipe(AugmentPipe):
    """An augmentation with fixed parameters: a linear map of the images whose Jacobian is computed below."""

    def __init__(self, params):
        super().__init__(p=1.0)
        self.params = params

    def forward(self, images, generator=None):
        return self.apply(images, self.params)


class _LinearD(nn.Module):
    """``D(y)_i = sum(w * y_i)``: its gradient with respect to ``y_i`` is ``w`` whatever ``y``."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(3)))

    def forward(self, img, c=None):
        return (img * self.w).sum(dim=[1, 2, 3]).unsqueeze(1)


def test_r1_is_taken_on_unaugmented_reals_through_the_augmentation():
    """With y_i = A_i x_i (fixed augmentation) and D(y) = <w, y>: grad_x = A_i^T w, so the official
    penalty is |A_i^T w|^2 and its gradient for w is 2 A_i A_i^T w; on augmented reals it would be |w|^2."""
    module = StyleGAN2ADA(**TINY, augment=None)
    params = replace(AugmentParams.identity(2), scale=torch.tensor([1.25, 1.0]), rotate_pre=torch.tensor([0.0, 0.4]),
                     contrast=torch.tensor([1.5, 0.7]))
    module.augment_pipe = _FixedPipe(params)  # resampled geometry (grid_sample) and a colour scaling
    module.D = _LinearD()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1

    penalty, logits = module.r1(x, None)
    penalty.sum().backward()  # double backward through grid_sample, bicubic/antialiased resizing, padding

    jac = torch.autograd.functional.jacobian(lambda inp: AugmentPipe.apply(inp, params), x)  # [2,3,8,8, 2,3,8,8]
    w = module.D.w.detach().flatten()
    expect_pen, expect_grad = [], torch.zeros(192)
    for i in range(2):
        A = jac[i, :, :, :, i].reshape(192, 192)  # d y_i / d x_i
        assert float(jac[i, :, :, :, 1 - i].abs().max()) == 0  # images do not interact
        g = A.T @ w
        expect_pen.append(float(g.square().sum()))
        expect_grad += 2 * A @ g
    torch.testing.assert_close(penalty.detach(), torch.tensor(expect_pen), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(module.D.w.grad.flatten(), expect_grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits.detach().flatten(), (jac.reshape(2 * 192, 2 * 192) @ x.flatten()).reshape(2, 192) @ w,
                               rtol=1e-4, atol=1e-4)

    # the former variant (gradient w.r.t. the augmented images) gives |w|^2 for both: clearly different
    augmented = module.augment_pipe(x).detach().requires_grad_(True)
    old = r1_penalty(module.D(augmented), augmented).detach()
    torch.testing.assert_close(old, torch.full((2,), float(w.square().sum())))
    assert (penalty.detach() - old).abs().min() > 0.05 * float(old[0])


def test_r1_through_the_random_bgc_pipe_matches_the_jacobian_and_trains_d():
    torch.manual_seed(0)
    module = StyleGAN2ADA(**TINY, augment="bgc", augment_p=1.0)
    x = torch.rand(4, 3, 8, 8) * 2 - 1

    torch.manual_seed(7)
    penalty, _ = module.r1(x, None)
    torch.manual_seed(7)  # the same augmentation draws
    jac = torch.autograd.functional.jacobian(lambda inp: module.run_D(inp, None).flatten(), x)  # [4, 4, 3, 8, 8]
    expect = jac.sum(0).square().sum(dim=[1, 2, 3])
    torch.testing.assert_close(penalty.detach(), expect, rtol=1e-3, atol=1e-6)

    torch.manual_seed(7)
    augmented = module.augment_pipe(x).detach().requires_grad_(True)
    old = r1_penalty(module.D(augmented, None), augmented).detach()
    assert not torch.allclose(old, expect, rtol=1e-2)  # p > 0: the augmented-real penalty is another number

    penalty.sum().backward()
    grads = [p.grad for p in module.D.parameters() if p.grad is not None]
    # every weight gets a gradient; only the output bias cannot change d D / d x
    assert {n for n, p in module.D.named_parameters() if p.grad is None} == {"b4.out.bias"}
    assert all(g.isfinite().all() for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_one_ada_controller_drives_p_by_the_official_rule():
    assert ada_adjust(0.0, 0.9, 32) == pytest.approx(32 * 4 / 500_000)
    assert ada_adjust(0.1, 0.2, 32) == pytest.approx(0.1 - 32 * 4 / 500_000)
    assert ada_adjust(1e-5, 0.2, 32) == 0.0  # clamped at 0
    assert ada_adjust(0.3, 0.6, 32) == 0.3  # exactly on target: no change

    module = StyleGAN2ADA(**TINY, augment="bgc")
    assert isinstance(module.ada, AdaptiveP) and module.ada.pipe is module.augment_pipe
    assert (module.ada.target, module.ada.interval, module.ada.ada_kimg) == (0.6, 4, 500.0)
    step = 8 * 4 / 500_000
    # four batches of 8 with 7 positive outputs each: r_t = (7 - 1) / 8 = 0.75 > 0.6 -> p up
    for _ in range(4):
        module.accumulate_ada(torch.tensor([1.0] * 7 + [-2.0]).unsqueeze(1))
    assert module.update_ada(8) == pytest.approx(0.75)
    assert float(module.augment_pipe.p) == pytest.approx(step)
    assert float(module.ada_stats.abs().sum()) == 0  # statistics reset
    # r_t = 0.5 < 0.6 -> p down, clamped at 0
    for _ in range(4):
        module.accumulate_ada(torch.tensor([1.0] * 6 + [-1.0] * 2))
    assert module.update_ada(8) == pytest.approx(0.5)
    assert float(module.augment_pipe.p) == pytest.approx(0.0)
    for _ in range(4):
        module.accumulate_ada(torch.tensor([1.0] * 6 + [-1.0] * 2))
    module.update_ada(8)
    assert float(module.augment_pipe.p) == 0.0

    fixed = StyleGAN2ADA(**TINY, augment="bgc", augment_p=0.3, ada_target=None)
    fixed.accumulate_ada(torch.ones(8, 1))
    assert fixed.update_ada(8) == 1.0 and float(fixed.augment_pipe.p) == pytest.approx(0.3)


def test_old_checkpoints_ada_statistics_key_still_loads():
    module = StyleGAN2ADA(**TINY, augment="bgc")
    sd = module.state_dict()
    assert "ada.stats" in sd and "ada_stats" not in sd and "ada.pipe.p" not in sd
    sd["ada_stats"] = torch.tensor([3.0, 8.0], dtype=torch.float64)
    del sd["ada.stats"]
    other = StyleGAN2ADA(**TINY, augment="bgc")
    other.load_state_dict(sd)
    assert other.ada_stats.tolist() == [3.0, 8.0]


def test_sanitize_gradients_is_the_official_nan_to_num():
    a = nn.Parameter(torch.zeros(5))
    a.grad = torch.tensor([float("nan"), float("inf"), float("-inf"), 2.5, -1e9])
    b = nn.Parameter(torch.zeros(2))  # no gradient: left alone
    sanitize_gradients([a, b])
    assert a.grad.tolist() == [0.0, 1e5, -1e5, 2.5, -1e9] and b.grad is None


class _Faces(Dataset):
    def __init__(self, n=16):
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "attrs": torch.tensor([1.0, 0.0]), "index": i}


@pytest.mark.slow
def test_short_fit_updates_all_state_and_checkpoints_it(tmp_path):
    L.seed_everything(0)
    counts = []

    class Recording(StyleGAN2ADA):
        def update_ada(self, global_batch):
            counts.append(float(self.ada_stats[1]))
            return super().update_ada(global_batch)

    module = Recording(**TINY, c_dim=2, augment="bgc", augment_p=0.2)
    g_before = {k: v.clone() for k, v in module.G.state_dict().items()}
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(_Faces(), batch_size=4))
    assert trainer.global_step == 4
    assert int(module.images_seen) == 16 and int(module.batches_seen) == 4
    assert float(module.pl_mean) > 0  # path-length regularisation ran (steps 0)
    assert float(module.augment_pipe.p) != 0.2  # ADA adjusted p after 4 batches
    assert counts == [4 * 4 + 4]  # real logits of 4 Dmain passes and of the Dreg pass at batch 0
    assert any(not torch.equal(v, module.G.state_dict()[k]) for k, v in g_before.items() if v.is_floating_point())
    assert not module.G_ema.training

    ckpt_path = tmp_path / "s.ckpt"
    trainer.save_checkpoint(ckpt_path)
    ckpt = load_checkpoint(ckpt_path, expect_phase="stylegan2ada")
    sd = ckpt["state_dict"]
    for key in ("pl_mean", "images_seen", "augment_pipe.p", "ada.stats", "G_ema.mapping.w_avg", "D.b4.out.weight"):
        assert key in sd, key
    restored = Recording.load_from_checkpoint(ckpt_path, weights_only=True)
    assert float(restored.pl_mean) == float(module.pl_mean)
    assert float(restored.augment_pipe.p) == pytest.approx(float(module.augment_pipe.p))
    imgs = restored.sample(3, seed=5, c=torch.eye(2)[[0, 1, 0]])
    assert imgs.shape == (3, 3, 8, 8) and imgs.abs().max() <= 1
    torch.testing.assert_close(imgs, module.sample(3, seed=5, c=torch.eye(2)[[0, 1, 0]]))


def _quiet_trainer(tmp_path, **kw):
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path, **kw)


def test_training_sanitises_nonfinite_gradients_before_each_step(tmp_path, monkeypatch):
    L.seed_everything(0)
    module = StyleGAN2ADA(**TINY, augment=None)
    weight = module.D.b4.out.weight  # the last layer: gets a gradient in every D pass

    def poison(g):
        g = g.clone()
        g[0, :3] = torch.tensor([float("nan"), float("inf"), float("-inf")])
        return g

    weight.register_hook(poison)
    seen = []
    original = torch.optim.Adam.step

    def recording_step(self, closure=None):
        def closure_then_record():  # Lightning's closure ends with the on_before_optimizer_step hooks
            out = closure() if closure is not None else None
            if any(p is weight for group in self.param_groups for p in group["params"]):
                seen.append(weight.grad[0, :3].clone())
            return out

        return original(self, closure=closure_then_record)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    _quiet_trainer(tmp_path, max_steps=1).fit(module, DataLoader(_Faces(4), batch_size=4))
    assert len(seen) == 2  # Dmain and Dreg (R1 at batch 0)
    for g in seen:
        assert g.tolist() == [0.0, 1e5, -1e5]
    assert all(p.isfinite().all() for p in module.D.parameters())


def test_nonfinite_loss_still_stops_training(tmp_path):
    L.seed_everything(0)
    module = StyleGAN2ADA(**TINY, augment=None)
    d_before = {k: v.clone() for k, v in module.D.state_dict().items()}
    data = _Faces(4)
    data.x[1, 0, 0, 0] = float("nan")  # a broken real image: D's loss on reals becomes NaN
    with pytest.raises(NonFiniteLossError, match="loss_D"):
        _quiet_trainer(tmp_path, max_steps=1).fit(module, DataLoader(data, batch_size=4))
    for k, v in module.D.state_dict().items():
        assert torch.equal(v, d_before[k]), k  # no discriminator step was taken
