"""StyleGAN2ADA phase: regularisers against plain autograd, ADA rule, lazy Adam, a short fit + checkpoint."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from multifeat.io.checkpoints import load_checkpoint
from multifeat.nets.stylegan2 import Discriminator, Generator
from multifeat.phases.stylegan2ada import (
    StyleGAN2ADA,
    ada_adjust,
    lazy_adam_settings,
    path_length_penalty,
    r1_penalty,
)

TINY = dict(image_size=8, z_dim=8, w_dim=8, channel_base=64, channel_max=8, mbstd_group_size=2, num_fixed=4)


def test_r1_penalty_matches_jacobian_and_hand_case():
    torch.manual_seed(0)
    D = Discriminator(0, 8, 3, channel_base=64, channel_max=8, epilogue_kwargs={"mbstd_group_size": 2})
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    got = r1_penalty(D(x), x)
    jac = torch.autograd.functional.jacobian(lambda inp: D(inp).flatten(), x.detach())  # [4, 4, 3, 8, 8]
    expect = jac.sum(0).square().sum(dim=[1, 2, 3])  # gradient of sum(D) per input sample
    torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-7)

    w = torch.randn(3, 2, 2)
    xs = torch.randn(5, 3, 2, 2, requires_grad=True)
    got = r1_penalty((xs * w).sum(dim=[1, 2, 3], keepdim=True), xs)
    torch.testing.assert_close(got, torch.full((5,), float(w.square().sum())))


def test_path_length_penalty_matches_per_sample_loop():
    torch.manual_seed(1)
    G = Generator(8, 0, 8, 8, 3, mapping_kwargs={"num_layers": 1},
                  synthesis_kwargs={"channel_base": 64, "channel_max": 8})
    ws = G.mapping(torch.randn(3, 8), None).detach().requires_grad_(True)
    img = G.synthesis(ws, noise_mode="const")
    noise = torch.randn_like(img) / 8
    pl_mean = torch.tensor(0.5)
    penalty, lengths, new_mean = path_length_penalty(img, ws, pl_mean, decay=0.01, noise=noise)
    expect = []
    for i in range(3):  # J_i^T y_i for each sample separately
        (g,) = torch.autograd.grad((img[i] * noise[i]).sum(), ws, retain_graph=True)
        assert g[[j for j in range(3) if j != i]].abs().max() == 0  # samples do not interact
        expect.append(math.sqrt(float(g[i].square().sum(dim=1).mean())))
    expect = torch.tensor(expect)
    torch.testing.assert_close(lengths, expect, rtol=1e-4, atol=1e-6)
    a = 0.5 + 0.01 * (float(expect.mean()) - 0.5)
    torch.testing.assert_close(new_mean, torch.tensor(a), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(penalty, (expect - a).square(), rtol=1e-4, atol=1e-7)
    penalty.sum().backward()  # differentiable w.r.t. the generator
    assert G.synthesis.b8.conv1.weight.grad is not None


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


def test_ada_rule_on_scripted_discriminator_outputs():
    assert ada_adjust(0.0, 0.9, 32) == pytest.approx(32 * 4 / 500_000)
    assert ada_adjust(0.1, 0.2, 32) == pytest.approx(0.1 - 32 * 4 / 500_000)
    assert ada_adjust(1e-5, 0.2, 32) == 0.0  # clamped at 0
    assert ada_adjust(0.3, 0.6, 32) == 0.3  # exactly on target: no change

    module = StyleGAN2ADA(**TINY, augment="bgc")
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
    module = StyleGAN2ADA(**TINY, c_dim=2, augment="bgc", augment_p=0.2)
    g_before = {k: v.clone() for k, v in module.G.state_dict().items()}
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(_Faces(), batch_size=4))
    assert trainer.global_step == 4
    assert int(module.images_seen) == 16 and int(module.batches_seen) == 4
    assert float(module.pl_mean) > 0  # path-length regularisation ran (steps 0)
    assert float(module.augment_pipe.p) != 0.2  # ADA adjusted p after 4 batches
    assert any(not torch.equal(v, module.G.state_dict()[k]) for k, v in g_before.items() if v.is_floating_point())
    assert not module.G_ema.training

    ckpt_path = tmp_path / "s.ckpt"
    trainer.save_checkpoint(ckpt_path)
    ckpt = load_checkpoint(ckpt_path, expect_phase="stylegan2ada")
    sd = ckpt["state_dict"]
    for key in ("pl_mean", "images_seen", "augment_pipe.p", "ada_stats", "G_ema.mapping.w_avg", "D.b4.out.weight"):
        assert key in sd, key
    restored = StyleGAN2ADA.load_from_checkpoint(ckpt_path, weights_only=True)
    assert float(restored.pl_mean) == float(module.pl_mean)
    assert float(restored.augment_pipe.p) == pytest.approx(float(module.augment_pipe.p))
    imgs = restored.sample(3, seed=5, c=torch.eye(2)[[0, 1, 0]])
    assert imgs.shape == (3, 3, 8, 8) and imgs.abs().max() <= 1
    torch.testing.assert_close(imgs, module.sample(3, seed=5, c=torch.eye(2)[[0, 1, 0]]))
