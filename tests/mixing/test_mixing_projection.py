"""Projection: the official schedule by hand, the noise regulariser against a plain loop, batching that
equals one-by-one optimisation, and a round trip from a known w."""

import math

import pytest
import torch
import torch.nn.functional as F
from mixing_helpers import FIXTURE, tiny_generator

from multifeat.errors import ConfigError
from multifeat.mixing import StyleMixer, projection_schedule
from multifeat.mixing.projection import noise_layers, noise_regularization, swapped_noise


def test_schedule_by_hand():
    # t = 0: ramp-up factor 0 -> lr 0; full exploration noise w_std * 0.05
    assert projection_schedule(0, 100, w_std=2.0) == pytest.approx((0.0, 0.1))
    # t = 0.01: ramp-up 0.01 / 0.05 = 0.2 -> lr 0.02; noise 2 * 0.05 * (1 - 0.01/0.75)^2
    lr, sn = projection_schedule(1, 100, w_std=2.0)
    assert lr == pytest.approx(0.02) and sn == pytest.approx(0.1 * (1 - 0.01 / 0.75) ** 2)
    # t = 0.5: full lr, noise 0.05 * (1/3)^2
    assert projection_schedule(50, 100) == pytest.approx((0.1, 0.05 / 9))
    # t = 0.9: ramp-down (1 - 0.9) / 0.25 = 0.4 -> 0.5 - 0.5 cos(0.4 pi); noise 0 after t = 0.75
    lr, sn = projection_schedule(90, 100)
    assert lr == pytest.approx(0.1 * (0.5 - 0.5 * math.cos(0.4 * math.pi))) and sn == 0.0


def _plain_noise_reg(maps):
    """The regulariser for ONE image, written as a plain loop over maps and scales."""
    total = 0.0
    for m in maps:
        x = m[None, None]
        while True:
            total += float((x * torch.roll(x, 1, dims=3)).mean()) ** 2 + float((x * torch.roll(x, 1, dims=2)).mean()) ** 2
            if x.shape[2] <= 8:
                break
            x = F.avg_pool2d(x, 2)
    return total


def test_noise_regularization_matches_a_plain_loop():
    torch.manual_seed(0)
    maps = [torch.randn(3, 1, 4, 4), torch.randn(3, 1, 16, 16), torch.randn(3, 1, 32, 32) + 0.3]
    batched = noise_regularization(maps)
    for i in range(3):
        assert float(batched[i]) == pytest.approx(_plain_noise_reg([m[i, 0] for m in maps]), rel=1e-5)


def test_swapped_noise_is_used_and_restored(fixtures_dir):
    mixer = StyleMixer(fixtures_dir / FIXTURE, distance="pixel-gradient")
    ref = torch.load(fixtures_dir / FIXTURE, weights_only=True)
    layers = noise_layers(mixer.G.synthesis)
    before = {k: m.noise_const.clone() for k, m in layers.items()}
    # per-image maps equal to the generator's own reproduce the 'const' images
    own = {k: v.expand(4, -1, -1) for k, v in before.items()}
    torch.testing.assert_close(mixer.synthesize(ref["ws"], own), ref["img_const"].clamp(-1, 1), atol=1e-4, rtol=0)
    zeros = {k: torch.zeros(4, *v.shape) for k, v in before.items()}
    torch.testing.assert_close(mixer.synthesize(ref["ws"], zeros), ref["img_none"].clamp(-1, 1), atol=1e-4, rtol=0)
    for k, m in layers.items():
        assert torch.equal(m.noise_const, before[k])
    with pytest.raises(ConfigError, match="unknown layers"), swapped_noise(mixer.G.synthesis, {"b99.conv0": zeros["b4.conv1"]}):
        pass


def test_batched_projection_equals_one_target_at_a_time():
    # deterministic settings (no exploration noise, no noise maps): batching must not couple targets
    mixer = StyleMixer(tiny_generator(1, resolution=8), distance="pixel-gradient")
    targets = mixer.synthesize(mixer.sample_ws(3, seed=4))
    kw = dict(space="w+", num_steps=12, progress=False, w_avg_samples=200, initial_noise_factor=0.0, optimize_noise=False)
    together = mixer.project(targets, **kw)
    for i in range(3):
        alone = mixer.project(targets[i : i + 1], **kw)
        torch.testing.assert_close(alone.ws[0], together.ws[i], atol=1e-5, rtol=1e-4)
        assert alone.errors[0]["mse"] == pytest.approx(together.errors[i]["mse"], rel=1e-4, abs=1e-7)


def test_projection_checks_its_inputs():
    mixer = StyleMixer(tiny_generator(1, resolution=8), distance="pixel-gradient")
    with pytest.raises(ConfigError, match=r"targets must be \[N, 3, 8, 8\]"):
        mixer.project(torch.zeros(1, 3, 16, 16), num_steps=1, progress=False)
    with pytest.raises(ConfigError, match="space must be"):
        mixer.project(torch.zeros(1, 3, 8, 8), space="z", num_steps=1, progress=False)


@pytest.mark.slow
def test_round_trip_from_a_known_w():
    G = tiny_generator(0, resolution=16)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    mixer = StyleMixer(G, distance="pixel-gradient")
    w_true = mixer.sample_ws(4, seed=5, truncation_psi=0.7)
    targets = mixer.synthesize(w_true)
    res = mixer.project(targets, space="w", num_steps=150, seed=0, progress=False, w_avg_samples=2000, optimize_noise=False)
    start = torch.tensor([e["mse"] for e in res.start_errors])
    end = torch.tensor([e["mse"] for e in res.errors])
    assert res.ws.shape == (4, mixer.num_ws, mixer.w_dim)
    assert torch.equal(res.ws[:, 0], res.ws[:, -1])  # space w: one w for every layer
    assert float(end.mean()) < float(start.mean()) / 10, (start, end)
    assert float(end.max()) < 0.03, end
    assert all(e["psnr"] > 20 for e in res.errors)
    assert res.distance == "pixel-gradient" and res.loss_history.shape == (150,)
    # reported errors are those of the returned images
    torch.testing.assert_close(res.images, mixer.synthesize(res.ws), atol=1e-5, rtol=0)
    # the caller's generator is untouched
    for k, v in G.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.slow
def test_w_plus_projection_with_noise_maps(fixtures_dir):
    mixer = StyleMixer(fixtures_dir / FIXTURE, distance="pixel-gradient")
    targets = mixer.synthesize(mixer.sample_ws(2, seed=3, truncation_psi=0.5))
    res = mixer.project(targets, space="w+", num_steps=60, progress=False, w_avg_samples=1000)
    assert set(res.noise) == set(noise_layers(mixer.G.synthesis))
    for m in res.noise.values():  # renormalised every step: zero mean, unit variance per image
        assert m.shape[0] == 2
        torch.testing.assert_close(m.mean(dim=(1, 2)), torch.zeros(2), atol=1e-4, rtol=0)
        torch.testing.assert_close(m.square().mean(dim=(1, 2)), torch.ones(2), atol=1e-3, rtol=0)
    start = sum(e["mse"] for e in res.start_errors)
    assert sum(e["mse"] for e in res.errors) < start / 2
    # the projected images are drawn with the optimised noise maps
    torch.testing.assert_close(res.images, mixer.synthesize(res.ws, res.noise), atol=1e-5, rtol=0)
    saved = res.to_dict()
    assert saved["ws"].shape == (2, 8, 32) and saved["distance"] == "pixel-gradient"
