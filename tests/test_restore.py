"""Restorers: GPEN weight loading (layouts, config inference, errors), resizing round trip, identity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from multifeat.errors import CheckpointError, ConfigError
from multifeat.nets.gpen import GPEN
from multifeat.restore import GPENRestorer, IdentityRestorer, Restorer, build_restorer, infer_gpen_config

TINY = dict(size=16, style_dim=16, n_mlp=2, channel_multiplier=1, narrow=1 / 32)


def _tiny_net(seed=0, **kw):
    torch.manual_seed(seed)
    net = GPEN(**{**TINY, **kw})
    with torch.no_grad():  # non-zero biases and feature scales, so every parameter matters
        for name, p in net.named_parameters():
            if name.endswith("bias") or name.endswith("noise.weight"):
                p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def _save(obj, path):
    torch.save(obj, path)
    return path


def _images(b, h, w, seed=3):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_round_trip_resizes_and_matches_manual_pipeline(tmp_path):
    net = _tiny_net()
    path = _save(net.state_dict(), tmp_path / "gpen.pth")
    restorer = GPENRestorer.from_weights(path, batch_size=2)
    assert isinstance(restorer, Restorer) and restorer.size == 16
    x = _images(3, 24, 20)
    y = restorer(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= -1 and y.max() <= 1
    # plain reference: antialiased bicubic resize, network, resize back, clamp
    with torch.no_grad():
        small = F.interpolate(x, size=(16, 16), mode="bicubic", align_corners=False, antialias=True).clamp(
            -1, 1
        )
        out = net(small)[0]
        ref = F.interpolate(out, size=(24, 20), mode="bicubic", align_corners=False, antialias=True).clamp(
            -1, 1
        )
    assert torch.allclose(y, ref, atol=1e-5)
    # at the model's own size no resizing happens
    x16 = _images(2, 16, 16)
    with torch.no_grad():
        assert torch.allclose(restorer(x16), net(x16)[0].clamp(-1, 1), atol=1e-6)


def test_infers_config_and_accepts_wrappers(tmp_path):
    net = _tiny_net(size=64, channel_multiplier=2, narrow=1 / 32, n_mlp=3, style_dim=24)
    sd = net.state_dict()
    cfg = infer_gpen_config(sd)
    assert {
        k: cfg[k] for k in ("size", "style_dim", "n_mlp", "channel_multiplier", "narrow", "isconcat")
    } == dict(size=64, style_dim=24, n_mlp=3, channel_multiplier=2, narrow=1 / 32, isconcat=True)
    variants = {
        "raw": sd,
        "params_ema": {"params_ema": sd, "iter": 5},
        "g_ema": {"g": {"x": torch.zeros(1)}, "g_ema": sd},
        "module": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        "no_kernels": {k: v for k, v in sd.items() if not k.endswith("kernel")},
    }
    for name, obj in variants.items():
        r = GPENRestorer.from_weights(_save(obj, tmp_path / f"{name}.pt"))
        loaded = r.net.state_dict()
        assert list(loaded) == list(sd), name
        assert all(torch.equal(loaded[k], v) for k, v in sd.items()), name


@pytest.mark.slow
def test_loads_reference_fixture_weights(tmp_path, fixtures_dir):
    ref = torch.load(fixtures_dir / "gpen" / "gpen_tiny_reference.pt", weights_only=True)
    path = _save(ref["state_dict"], tmp_path / "tiny.pth")
    r = build_restorer("gpen", str(path))
    assert r.net.config["narrow"] == 0.125 and r.net.config["channel_multiplier"] == 1
    assert torch.allclose(r(ref["input"]), ref["output"].clamp(-1, 1), atol=1e-4)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        GPENRestorer.from_weights(tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"definitely not a torch file")
    with pytest.raises(CheckpointError, match="cannot read"):
        GPENRestorer.from_weights(garbage)
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        GPENRestorer.from_weights(_save({"epoch": 3, "note": "hello"}, tmp_path / "meta.pt"))
    with pytest.raises(CheckpointError, match="not a GPEN state dict"):
        GPENRestorer.from_weights(_save({"conv.weight": torch.zeros(2, 2)}, tmp_path / "other.pt"))

    sd = _tiny_net().state_dict()
    missing = {k: v for k, v in sd.items() if k != "generator.convs.1.noise.weight"}
    with pytest.raises(CheckpointError, match=r"missing keys \['generator\.convs\.1\.noise\.weight'\]"):
        GPENRestorer.from_weights(_save(missing, tmp_path / "missing.pt"))
    wrong = dict(sd)
    wrong["generator.to_rgbs.0.conv.weight"] = torch.zeros(1, 3, 7, 1, 1)
    with pytest.raises(CheckpointError, match=r"generator\.to_rgbs\.0\.conv\.weight: file \(1, 3, 7, 1, 1\)"):
        GPENRestorer.from_weights(_save(wrong, tmp_path / "wrong.pt"))
    extra = {**sd, "generator.noises.noise_0": torch.zeros(1, 1, 4, 4)}
    with pytest.raises(CheckpointError, match="unexpected keys"):
        GPENRestorer.from_weights(_save(extra, tmp_path / "extra.pt"))
    with pytest.raises(CheckpointError, match="size=512"):
        GPENRestorer.from_weights(_save(sd, tmp_path / "ok.pt"), size=512)


def test_identity_and_builder():
    x = _images(2, 10, 12)
    ident = build_restorer("none", None)
    assert isinstance(ident, IdentityRestorer)
    assert torch.equal(ident(x), x)
    assert isinstance(build_restorer("identity"), IdentityRestorer)
    with pytest.raises(ConfigError, match="--restore-weights"):
        build_restorer("gpen", None)
    with pytest.raises(ConfigError, match="codeformer"):
        build_restorer("codeformer", "x.pth")
