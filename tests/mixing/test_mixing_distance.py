"""Image distances: the fallback against hand-worked numbers, the VGG/LPIPS distance against a plain
re-computation, and the local-only weight lookup."""

import pytest
import torch
import torch.nn.functional as F

from multifeat.errors import CheckpointError, ConfigError
from multifeat.mixing.distance import PixelGradientDistance, VGGPerceptualDistance, build_distance


def test_pixel_gradient_distance_by_hand():
    d = PixelGradientDistance(min_size=2)
    x = torch.zeros(1, 1, 2, 2)
    y = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # one scale only (2 px; half of it is below min_size): pixel MSE 1/4;
    # horizontal diffs of d = -y: rows [-1, 0] -> (0 - (-1))^2 = 1 and 0 -> mean 1/2; vertical the same
    assert float(d(x, y)) == pytest.approx(0.25 + 0.5 + 0.5)
    d4 = PixelGradientDistance(min_size=2)
    x4 = torch.zeros(2, 3, 4, 4)
    y4 = torch.ones(2, 3, 4, 4)
    # constant offset 1: pixel term 1 at both scales (4 and 2 px), no gradient term
    torch.testing.assert_close(d4(x4, y4), torch.ones(2))
    assert float(d4(y4, y4).abs().max()) == 0.0


def _fake_weight_files(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["D"]).eval()  # torchvision's own VGG16 feature stack
    # a torchvision-style state dict: 'features.*' plus classifier keys that must be ignored
    sd = {f"features.{k}": v for k, v in features.state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(2, 2)
    torch.save(sd, tmp_path / "vgg16.pth")
    channels = [64, 128, 256, 512, 512]
    lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(channels)}
    torch.save(lin, tmp_path / "lpips_vgg.pth")
    return features, lin


@pytest.mark.slow
def test_lpips_vgg_matches_a_plain_computation(tmp_path):
    model, lin = _fake_weight_files(tmp_path)
    dist = VGGPerceptualDistance(tmp_path / "vgg16.pth", tmp_path / "lpips_vgg.pth")
    assert dist.name == "lpips-vgg"
    torch.manual_seed(1)
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1

    # plain LPIPS: scaling layer, VGG slices ending at relu1_2 .. relu5_3, unit-normalise, weight, average, sum
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    def feats(img):
        h, out = (img - shift) / scale, []
        for i in range(30):
            h = model[i](h)
            if i in (3, 8, 15, 22, 29):
                out.append(h)
        return out

    expected = torch.zeros(2)
    for k, (a, b) in enumerate(zip(feats(x), feats(y))):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        expected += F.conv2d((a - b) ** 2, lin[f"lin{k}.model.1.weight"]).mean(dim=(1, 2, 3))
    with torch.no_grad():
        torch.testing.assert_close(dist(x, y), expected, rtol=1e-4, atol=1e-6)
        assert float(dist(x, x).abs().max()) == 0.0
    # gradients flow to the images (needed by projection)
    xg = x.clone().requires_grad_(True)
    dist(xg, y).sum().backward()
    assert xg.grad is not None and float(xg.grad.abs().sum()) > 0
    # without LPIPS weights: unit channel weights, a different name
    plain = build_distance("vgg16-features", vgg_weights=tmp_path / "vgg16.pth")
    assert plain.name == "vgg16-features"


def test_auto_falls_back_without_local_weights_and_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    d = build_distance("auto")
    assert d.name == "pixel-gradient" and "no learned weights" in d.description
    with pytest.raises(ConfigError, match="needs VGG16 weights on this machine"):
        build_distance("lpips-vgg")
    with pytest.raises(ConfigError, match="unknown distance"):
        build_distance("ssim")
    with pytest.raises(CheckpointError, match="does not exist"):
        build_distance("vgg16-features", vgg_weights=tmp_path / "nope.pth")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="not a torchvision VGG16 state dict"):
        VGGPerceptualDistance(tmp_path / "bad.pth")
