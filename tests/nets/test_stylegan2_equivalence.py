"""This package's StyleGAN2-ADA networks against outputs of the official implementation.

The fixtures hold official constructor arguments, state dicts and outputs (see
``tests/fixtures/stylegan2ada/README.md``). Every output must match to 1e-4 (max abs error).
"""

import copy

import pytest
import torch

from multifeat.nets.stylegan2 import Discriminator, Generator

TOL = 1e-4


def _load(fixtures_dir, name):
    return torch.load(fixtures_dir / "stylegan2ada" / name, weights_only=True)


def _nets(ref):
    G = Generator(**ref["G_init_kwargs"]).eval()
    G.load_state_dict(ref["G_state_dict"], strict=True)
    D = Discriminator(**ref["D_init_kwargs"]).eval()
    D.load_state_dict(ref["D_state_dict"], strict=True)
    return G, D


def _check(name, got, expect):
    assert got.shape == expect.shape, f"{name}: shape {tuple(got.shape)} != {tuple(expect.shape)}"
    err = (got.float() - expect).abs().max().item()
    print(f"{name}: max abs error {err:.2e} (reference max |value| {expect.abs().max().item():.3g})")
    assert err <= TOL, f"{name}: max abs error {err:.3e} > {TOL}"


def test_state_dict_names_and_shapes_are_official(fixtures_dir):
    for fname in ("stylegan2ada_tiny_reference.pt", "stylegan2ada_tiny_conditional_reference.pt"):
        ref = _load(fixtures_dir, fname)
        G = Generator(**ref["G_init_kwargs"])
        D = Discriminator(**ref["D_init_kwargs"])
        for net, sd in ((G, ref["G_state_dict"]), (D, ref["D_state_dict"])):
            ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
            theirs = {k: tuple(v.shape) for k, v in sd.items()}
            assert ours == theirs
        assert G.num_ws == ref["ws"].shape[1]


def test_unconditional_generator_matches_official(fixtures_dir):
    ref = _load(fixtures_dir, "stylegan2ada_tiny_reference.pt")
    G, _ = _nets(ref)
    with torch.no_grad():
        _check("ws", G.mapping(ref["z"], None), ref["ws"])
        _check("ws_trunc_psi07", G.mapping(ref["z"], None, truncation_psi=0.7), ref["ws_trunc_psi07"])
        _check("img_const", G.synthesis(ref["ws"], noise_mode="const"), ref["img_const"])
        _check("img_none", G.synthesis(ref["ws"], noise_mode="none"), ref["img_none"])
        _check("img_trunc_psi07", G.synthesis(ref["ws_trunc_psi07"], noise_mode="const"), ref["img_trunc_psi07"])
        _check("img_mix_cutoff3", G.synthesis(ref["ws_mix_cutoff3"], noise_mode="const"), ref["img_mix_cutoff3"])
        _check("G(z) end to end", G(ref["z"], None), ref["img_const"])
        _check("img_const unfused", G.synthesis(ref["ws"], noise_mode="const", fused_modconv=False), ref["img_const"])
        # the fixture's mixing rule, applied to our own ws
        ws = G.mapping(ref["z"], None)
        ws[:, 3:] = ws.flip(0)[:, 3:]
        _check("ws_mix_cutoff3", ws, ref["ws_mix_cutoff3"])
        # random noise differs from the constant noise (noise_strength is non-zero in the fixture)
        assert (G.synthesis(ref["ws"], noise_mode="random") - ref["img_const"]).abs().max() > 1e-3


def test_truncation_cutoff_only_touches_first_layers(fixtures_dir):
    ref = _load(fixtures_dir, "stylegan2ada_tiny_reference.pt")
    G, _ = _nets(ref)
    with torch.no_grad():
        ws = G.mapping(ref["z"], None, truncation_psi=0.7, truncation_cutoff=3)
    _check("cutoff: first layers truncated", ws[:, :3], ref["ws_trunc_psi07"][:, :3])
    _check("cutoff: later layers untouched", ws[:, 3:], ref["ws"][:, 3:])


def test_unconditional_discriminator_matches_official(fixtures_dir):
    ref = _load(fixtures_dir, "stylegan2ada_tiny_reference.pt")
    _, D = _nets(ref)
    with torch.no_grad():
        _check("D_logits_of_img_const", D(ref["img_const"], None), ref["D_logits_of_img_const"])
        _check("D_logits_of_x_real", D(ref["x_real"], None), ref["D_logits_of_x_real"])


def test_conditional_networks_match_official(fixtures_dir):
    ref = _load(fixtures_dir, "stylegan2ada_tiny_conditional_reference.pt")
    G, D = _nets(ref)
    with torch.no_grad():
        _check("cond ws", G.mapping(ref["z"], ref["c"]), ref["ws"])
        _check("cond img_const", G.synthesis(ref["ws"], noise_mode="const"), ref["img_const"])
        _check("cond D_logits_of_img_const", D(ref["img_const"], ref["c"]), ref["D_logits_of_img_const"])
        # the labels matter: other labels give other logits
        assert (D(ref["img_const"], ref["c"].flip(0)) - ref["D_logits_of_img_const"]).abs().max() > 1e-4


def test_mapping_tracks_w_avg_in_training_mode_only(fixtures_dir):
    ref = _load(fixtures_dir, "stylegan2ada_tiny_reference.pt")
    G, _ = _nets(ref)
    w_avg = G.mapping.w_avg.clone()
    with torch.no_grad():
        G.mapping(ref["z"], None)
        torch.testing.assert_close(G.mapping.w_avg, w_avg)
        G.mapping.train()
        G.mapping(ref["z"], None, skip_w_avg_update=True)
        torch.testing.assert_close(G.mapping.w_avg, w_avg)
        G.mapping(ref["z"], None)
    expect = ref["ws"][:, 0].mean(0) * 0.005 + w_avg * 0.995
    torch.testing.assert_close(G.mapping.w_avg, expect, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("g_arch,d_arch", [("resnet", "skip"), ("orig", "orig")])
def test_other_architectures_build_and_train_step(g_arch, d_arch):
    torch.manual_seed(0)
    G = Generator(16, 3, 16, 16, 3, mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": 128, "channel_max": 16, "architecture": g_arch})
    D = Discriminator(3, 16, 3, architecture=d_arch, channel_base=128, channel_max=16,
                      epilogue_kwargs={"mbstd_group_size": 2})
    z, c = torch.randn(4, 16), torch.eye(3)[[0, 1, 2, 0]]
    img = G(z, c, noise_mode="random")
    assert img.shape == (4, 3, 16, 16)
    logits = D(img, c)
    assert logits.shape == (4, 1)
    logits.sum().backward()
    for name, p in list(G.named_parameters()) + list(D.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.slow
def test_fused_and_unfused_training_gradients_agree(fixtures_dir):
    ref = _load(fixtures_dir, "stylegan2ada_tiny_reference.pt")
    grads = []
    for fused in (True, False):
        G, _ = _nets(ref)
        G.train()
        G.synthesis(ref["ws"], noise_mode="const", fused_modconv=fused).square().mean().backward()
        grads.append({k: p.grad.clone() for k, p in G.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], atol=1e-4, rtol=1e-3)


@pytest.mark.slow
def test_fp16_layers_channels_last_and_bf16_autocast(fixtures_dir):
    """Reduced precision stays close to the float32 official output (same weights)."""
    ref = _load(fixtures_dir, "stylegan2ada_tiny_reference.pt")
    scale = ref["img_const"].abs().max().item()
    g_kwargs = copy.deepcopy(ref["G_init_kwargs"])
    g_kwargs["synthesis_kwargs"].update(num_fp16_res=2, fp16_channels_last=True)
    d_kwargs = dict(ref["D_init_kwargs"], num_fp16_res=2, block_kwargs={"fp16_channels_last": True})
    G = Generator(**g_kwargs).eval()
    G.load_state_dict(ref["G_state_dict"], strict=True)
    D = Discriminator(**d_kwargs).eval()
    D.load_state_dict(ref["D_state_dict"], strict=True)
    assert G.synthesis.b32.use_fp16 and G.synthesis.b16.use_fp16 and not G.synthesis.b8.use_fp16
    with torch.no_grad():
        img16 = G.synthesis(ref["ws"], noise_mode="const")
        logits16 = D(ref["x_real"])
        img32 = G.synthesis(ref["ws"], noise_mode="const", force_fp32=True)
    assert img16.dtype == torch.float32 and logits16.dtype == torch.float32
    err16 = (img16 - ref["img_const"]).abs().max().item() / scale
    print(f"fp16 layers (b16, b32): relative max error {err16:.2e}")
    assert err16 < 1e-2
    torch.testing.assert_close(logits16, ref["D_logits_of_x_real"], atol=5e-3, rtol=5e-2)
    _check("force_fp32", img32, ref["img_const"])

    G32, D32 = _nets(ref)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        imgbf = G32.synthesis(ref["ws"], noise_mode="const")
        logitsbf = D32(ref["x_real"])
    errbf = (imgbf.float() - ref["img_const"]).abs().max().item() / scale
    print(f"bf16 autocast: relative max error {errbf:.2e}")
    assert torch.isfinite(imgbf).all() and errbf < 5e-2
    assert torch.isfinite(logitsbf).all()
