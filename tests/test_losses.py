"""Loss functions against values worked out by hand."""

import math

import pytest
import torch

from multifeat import losses
from multifeat.errors import ConfigError
from multifeat.losses import path_length_penalty, r1_penalty
from multifeat.nets.stylegan2 import Discriminator, Generator


def t(*v):
    return torch.tensor(v, dtype=torch.float32)


def test_lsgan_d_loss_by_hand():
    # real scores 1.0, 0.5 -> (0^2 + 0.5^2)/2 = 0.125 ; fake scores 0.2, -0.4 -> (0.04 + 0.16)/2 = 0.1
    assert losses.lsgan_d_loss(t(1.0, 0.5), t(0.2, -0.4)).item() == pytest.approx(0.225)


def test_lsgan_g_loss_by_hand():
    # (0.2-1)^2 = 0.64 ; (-0.4-1)^2 = 1.96 -> mean 1.3
    assert losses.lsgan_g_loss(t(0.2, -0.4)).item() == pytest.approx(1.3)


def test_mean_equals_paper_sum_over_batch_size():
    d_real, d_fake = torch.randn(7), torch.randn(7)
    paper_sum = ((d_real - 1) ** 2).sum() + (d_fake**2).sum()
    assert losses.lsgan_d_loss(d_real, d_fake).item() == pytest.approx(paper_sum.item() / 7, rel=1e-6)


def test_classifier_loss_mse_and_bce_by_hand():
    # positives 0.9, 0.6 -> (0.01 + 0.16)/2 = 0.085 ; negatives 0.3 -> 0.09
    assert losses.classifier_loss(t(0.9, 0.6), t(0.3)).item() == pytest.approx(0.175)
    # bce: -(ln 0.9 + ln 0.6)/2 - ln(0.7)
    import math

    expected = -(math.log(0.9) + math.log(0.6)) / 2 - math.log(0.7)
    assert losses.classifier_loss(t(0.9, 0.6), t(0.3), kind="bce").item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ConfigError, match="'mse' or 'bce'"):
        losses.classifier_loss(t(0.5), t(0.5), kind="hinge")


def test_phase3_d_loss_by_hand():
    # D3(x) = 0.5 -> (0.5-1)^2 = 0.25 ; D3(G3 z) = 0.4 -> 0.16 ; D2(G3 z) = 0.9 -> (0.4-0.9)^2 = 0.25
    # (1*0.25 + 1*0.16 + 0.1*0.25) / 2.1 = 0.435/2.1
    v = losses.phase3_d_loss(t(0.5), t(0.4), t(0.9))
    assert v.item() == pytest.approx(0.435 / 2.1)


def test_phase3_d_loss_does_not_backprop_into_d2():
    d2 = t(0.9).requires_grad_()
    d3f = t(0.4).requires_grad_()
    losses.phase3_d_loss(t(0.5), d3f, d2).backward()
    assert d2.grad is None and d3f.grad is not None


def test_phase3_g_loss_by_hand_identity_and_hinge():
    # D3(G3 z) = 0.4 -> (0.4-1)^2 = 0.36 ; D2 = 0.7 -> (0.7-1)^2 = 0.09 ; (2*0.36 + 30*0.09)/32 = 3.42/32
    assert losses.phase3_g_loss(t(0.4), t(0.7)).item() == pytest.approx(3.42 / 32)
    # hinge tau=0.9: f(0.7) = 0.7/0.9 ; (0.7/0.9 - 1)^2 = (0.2/0.9)^2
    f = losses.make_f("hinge", tau=0.9)
    expected = (2 * 0.36 + 30 * (0.2 / 0.9) ** 2) / 32
    assert losses.phase3_g_loss(t(0.4), t(0.7), f=f).item() == pytest.approx(expected, rel=1e-6)
    # above tau the D2 term vanishes, with zero gradient
    d2 = t(0.95).requires_grad_()
    losses.phase3_g_loss(t(0.4), d2, f=f).backward()
    assert d2.grad.abs().item() == 0.0


def test_phase3_g_loss_gradient_flows_through_d2():
    d2 = t(0.7).requires_grad_()
    losses.phase3_g_loss(t(0.4), d2).backward()
    # d/dp of 30*(p-1)^2/32 at p=0.7 = 30*2*(-0.3)/32
    assert d2.grad.item() == pytest.approx(30 * 2 * -0.3 / 32)


def test_ablation_weights_drop_the_d2_terms():
    v = losses.phase3_d_loss(t(0.5), t(0.4), t(0.9), alpha=(1, 1, 0))
    assert v.item() == pytest.approx((0.25 + 0.16) / 2)
    v = losses.phase3_g_loss(t(0.4), t(0.7), beta=(2, 0))
    assert v.item() == pytest.approx(0.36)


@pytest.mark.parametrize("bad", [(1, 1), (1, -1, 0.1), (0, 0, 0)])
def test_bad_alpha_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match="alpha"):
        losses.phase3_d_loss(t(0.5), t(0.4), t(0.9), alpha=bad)


def test_unknown_f_is_a_clear_error():
    with pytest.raises(ConfigError, match="identity"):
        losses.make_f("sigmoid")
    with pytest.raises(ConfigError, match="f_tau"):
        losses.make_f("hinge", tau=0.0)


# -- StyleGAN2-ADA regularisers ------------------------------------------------------------------


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


def test_r1_penalty_needs_a_leaf_that_requires_grad():
    x = torch.randn(2, 3, 2, 2)
    with pytest.raises(ValueError, match="must require grad"):
        r1_penalty(x.sum(dim=[1, 2, 3]), x)


# ---------------------------------------------------------------------------------------------- StyleGAN2-ADA main losses
def test_logistic_losses_against_hand_worked_values():
    # softplus(v) = log(1 + e^v): softplus(0) = log 2, softplus(log 3) = log 4, softplus(-log 3) = log(4/3)
    fake = torch.tensor([0.0, math.log(3.0)])
    real = torch.tensor([math.log(3.0), 0.0])
    g = losses.logistic_g_loss(fake)  # mean(softplus(-fake)) = (log 2 + log(4/3)) / 2
    assert g.item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 2, abs=1e-6)
    d = losses.logistic_d_loss(real, fake)  # mean(softplus(fake) + softplus(-real))
    assert d.item() == pytest.approx(((math.log(2) + math.log(4 / 3)) + (math.log(4) + math.log(2))) / 2, abs=1e-6)
    # the gradient of the G loss pushes the fake logits up: d/dv softplus(-v) = -sigmoid(-v)
    v = fake.clone().requires_grad_(True)
    losses.logistic_g_loss(v).backward()
    torch.testing.assert_close(v.grad, -torch.sigmoid(-fake) / 2)
