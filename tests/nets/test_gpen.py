"""GPEN network against the reference fixture produced by the released model code."""

from __future__ import annotations

import pytest
import torch

from multifeat.nets.gpen import GPEN


@pytest.fixture
def ref(fixtures_dir):
    path = fixtures_dir / "gpen" / "gpen_tiny_reference.pt"
    if not path.is_file():
        pytest.fail(f"GPEN reference fixture missing: {path}")
    return torch.load(path, weights_only=True)


def test_reproduces_reference_output_and_latent(ref):
    net = GPEN(**ref["init_kwargs"])
    net.load_state_dict(ref["state_dict"], strict=True)
    net.eval()
    with torch.no_grad():
        code, feats = net.encode(ref["input"])
        out, latent = net(ref["input"])
    assert out.shape == ref["output"].shape and latent.shape == ref["latent"].shape
    assert (out - ref["output"]).abs().max().item() <= 1e-4
    assert (latent - ref["latent"]).abs().max().item() <= 1e-4
    assert len(feats) == len(ref["encoder_names"])
    for mine, theirs in zip(feats, ref["encoder_features"]):  # same order as encoder_names (ecd0 first)
        assert torch.allclose(mine, theirs, atol=1e-5)


def test_state_dict_names_and_order_match_reference(ref):
    net = GPEN(**ref["init_kwargs"])
    ours = net.state_dict()
    assert list(ours) == list(ref["state_dict"])
    assert all(ours[k].shape == v.shape for k, v in ref["state_dict"].items())
    # fixed FIR kernels equal the stored ones (they are buffers in the released files)
    for k, v in ref["state_dict"].items():
        if k.endswith("kernel"):
            assert torch.equal(ours[k], v), k


def test_official_512_layout_on_meta_device(ref):
    with torch.device("meta"):
        net = GPEN(**ref["official_512_init_kwargs"])
    shapes = {k: list(v.shape) for k, v in net.state_dict().items()}
    expected = {k: list(v) for k, v in ref["official_512_state_dict_shapes"].items()}
    assert shapes == expected
    assert sum(p.numel() for p in net.parameters()) == ref["official_512_num_params"] == 71_005_223


@pytest.mark.slow
def test_noise_weights_matter(ref):
    """The concatenated encoder features carry information: zeroing their scale changes the output."""
    net = GPEN(**ref["init_kwargs"])
    net.load_state_dict(ref["state_dict"])
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("noise.weight"):
                p.zero_()
        out, _ = net(ref["input"])
    rel = ((out - ref["output"]).norm() / ref["output"].norm()).item()
    assert rel == pytest.approx(ref["sensitivity"]["noise_weights_zeroed"], rel=1e-3)


def test_rejects_wrong_input_size():
    net = GPEN(size=16, style_dim=8, n_mlp=1, channel_multiplier=1, narrow=1 / 64)
    with pytest.raises(ValueError, match="16"):
        net(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="power of two"):
        GPEN(size=48, style_dim=8, n_mlp=1)
