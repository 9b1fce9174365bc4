"""Image distances: the pixel distance against hand-worked numbers, LPIPS (VGG16 + LPIPS' linear layers,
read from stand-ins of the real weight files where the ecosystem keeps them) against an independent
computation of the LPIPS formula, and the clear error when the weight files are missing."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from multifeat.errors import CheckpointError, ConfigError
from multifeat.mixing.distance import (
    DISTANCE_ALIASES,
    DISTANCE_KINDS,
    LPIPSWeightsMissingError,
    PixelGradientDistance,
    VGGPerceptualDistance,
    build_distance,
    distance_weight_files,
)

LPIPS_CHANNELS = (64, 128, 256, 512, 512)


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


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """Random stand-ins of the two real files, in their real formats:

    * torchvision's ``vgg16-397923af.pth``: a plain state dict with torchvision's exact VGG16 key names
      and shapes (``features.*`` random; the 100M-value ``classifier.*`` tensors are stride-0 views of
      one zero, so the file stays small);
    * the lpips package's ``weights/v0.1/vgg.pth``: ``lin{k}.model.1.weight`` of shape ``[1, C_k, 1, 1]``.
    """
    import torchvision
    from torchvision.models.vgg import cfgs, make_layers

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    features = make_layers(cfgs["D"]).eval()  # torchvision's own VGG16 feature stack
    sd = {f"features.{k}": v for k, v in features.state_dict().items()}
    for k, shape in {"classifier.0.weight": (4096, 25088), "classifier.0.bias": (4096,),
                     "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,),
                     "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,)}.items():
        sd[k] = torch.zeros(1).expand(*shape)
    with torch.device("meta"):
        real = torchvision.models.vgg16().state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == {k: tuple(v.shape) for k, v in real.items()}
    (root / "hub" / "checkpoints").mkdir(parents=True)
    vgg_path = root / "hub" / "checkpoints" / "vgg16-397923af.pth"
    torch.save(sd, vgg_path)

    lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(LPIPS_CHANNELS)}
    package = root / "site" / "lpips"
    (package / "weights" / "v0.1").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('the lpips package must not be imported')\n")
    lpips_path = package / "weights" / "v0.1" / "vgg.pth"
    torch.save(lin, lpips_path)
    return {"features": features, "lin": lin, "vgg": vgg_path, "lpips": lpips_path, "hub": root / "hub",
            "site": root / "site"}


def _lpips_by_hand(features, lin, x, y):
    """LPIPS written out: scaling layer, VGG16 up to relu1_2 .. relu5_3, unit-normalise over channels,
    squared difference, 1x1 linear layer, spatial mean, sum over the five layers."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(img):
        h, out = (img - shift) / scale, []
        for i in range(30):
            h = features[i](h)
            if i in (3, 8, 15, 22, 29):
                out.append(h)
        return out

    total = torch.zeros(x.shape[0])
    for k, (a, b) in enumerate(zip(feats(x), feats(y))):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total += F.conv2d((a - b) ** 2, lin[f"lin{k}.model.1.weight"]).mean(dim=(1, 2, 3))
    return total


@pytest.fixture
def installed(weight_files, monkeypatch):
    """The files where the ecosystem keeps them: the torch hub cache and an installed lpips package."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(weight_files["hub"]))
    monkeypatch.syspath_prepend(str(weight_files["site"]))
    return weight_files


def test_lpips_from_hub_cache_and_lpips_package_matches_the_formula(installed):
    dist = build_distance()  # the default is LPIPS
    assert isinstance(dist, VGGPerceptualDistance) and dist.name == "lpips-vgg"
    assert dist.sources == {"vgg": str(installed["vgg"]), "lpips": str(installed["lpips"])}
    torch.manual_seed(1)
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        expected = _lpips_by_hand(installed["features"], installed["lin"], x, y)
        torch.testing.assert_close(dist(x, y), expected, rtol=1e-4, atol=1e-6)
        assert float(dist(x, x).abs().max()) == 0.0
    assert float(expected.min()) > 0
    # gradients flow to the images (needed by projection)
    xg = x.clone().requires_grad_(True)
    dist(xg, y).sum().backward()
    assert xg.grad is not None and float(xg.grad.abs().sum()) > 0
    # the former names mean the same distance
    for old in ("auto", "lpips-vgg"):
        assert build_distance(old).name == "lpips-vgg"


def test_lpips_from_explicit_paths(weight_files, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    dist = build_distance("lpips", vgg_weights=weight_files["vgg"], lpips_weights=weight_files["lpips"])
    torch.manual_seed(2)
    x, y = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(dist(x, y), _lpips_by_hand(weight_files["features"], weight_files["lin"], x, y),
                                   rtol=1e-4, atol=1e-6)
    plain = build_distance("vgg16-features", vgg_weights=weight_files["vgg"])  # asked for by name only
    ones = {k: torch.ones_like(v) for k, v in weight_files["lin"].items()}
    with torch.no_grad():
        torch.testing.assert_close(plain(x, y), _lpips_by_hand(weight_files["features"], ones, x, y),
                                   rtol=1e-4, atol=1e-6)
    assert plain.name == "vgg16-features"


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No VGG16 file in the hub cache and no lpips package."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "lpips" else real_find_spec(name, *a, **k))
    return tmp_path


def test_missing_weights_are_a_clear_error_never_a_switch(offline, weight_files):
    hub_file = offline / "hub" / "checkpoints" / "vgg16-397923af.pth"
    for kind in ("lpips", "auto", "lpips-vgg"):
        with pytest.raises(LPIPSWeightsMissingError) as info:
            build_distance(kind)
        msg = str(info.value)
        assert "vgg16-397923af.pth" in msg and str(hub_file) in msg and "--vgg-weights" in msg
        assert "weights/v0.1/vgg.pth" in msg and "pip install lpips" in msg and "--lpips-weights" in msg
        assert "--perceptual pixel" in msg and "nothing is downloaded" in msg
    assert isinstance(info.value, CheckpointError)

    # only the LPIPS layers missing: the message names that file alone
    with pytest.raises(LPIPSWeightsMissingError) as info:
        build_distance("lpips", vgg_weights=weight_files["vgg"])
    assert "weights/v0.1/vgg.pth" in str(info.value) and "vgg16-397923af.pth" not in str(info.value)
    # only VGG16 missing
    with pytest.raises(LPIPSWeightsMissingError) as info:
        build_distance("lpips", lpips_weights=weight_files["lpips"])
    assert "vgg16-397923af.pth" in str(info.value) and "weights/v0.1/vgg.pth" not in str(info.value)
    with pytest.raises(LPIPSWeightsMissingError, match="vgg16-features"):
        build_distance("vgg16-features")

    # the weight-free distance is there when asked for
    assert build_distance("pixel").name == "pixel-gradient" and build_distance("pixel-gradient").name == "pixel-gradient"


def test_bad_names_and_files(tmp_path):
    assert DISTANCE_KINDS == ("lpips", "pixel", "vgg16-features")
    assert set(DISTANCE_ALIASES.values()) <= set(DISTANCE_KINDS)
    with pytest.raises(ConfigError, match="unknown perceptual distance 'ssim'"):
        build_distance("ssim")
    with pytest.raises(CheckpointError, match="does not exist"):
        build_distance("lpips", vgg_weights=tmp_path / "nope.pth", lpips_weights=tmp_path / "nope2.pth")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="not a torchvision VGG16 state dict"):
        VGGPerceptualDistance(tmp_path / "bad.pth")


def test_weight_files_are_located_without_loading(offline):
    """What a long run checks before it starts: the files a distance needs, found, not loaded."""
    assert distance_weight_files("pixel") == (None, None)
    with pytest.raises(LPIPSWeightsMissingError, match="vgg16-397923af.pth"):  # offline: neither file
        distance_weight_files("auto")


def test_weight_files_found_where_the_ecosystem_keeps_them(installed):
    assert distance_weight_files("lpips") == (installed["vgg"], installed["lpips"])
    assert distance_weight_files("vgg16-features") == (installed["vgg"], None)
