"""Layer presets, layer selection and style mixing against the official reference fixture."""

import pytest
import torch
from mixing_helpers import FIXTURE

from multifeat.errors import ConfigError
from multifeat.mixing import (
    StyleMixer,
    layer_table,
    load_stylegan2_generator,
    mix_ws,
    preset_layers,
    resolve_layers,
)
from multifeat.mixing.layers import band_resolution, pair_indices, parse_layers


@pytest.fixture
def reference(fixtures_dir):
    return torch.load(fixtures_dir / FIXTURE, weights_only=True)


def test_presets_follow_the_documented_table():
    # 1024 px: 18 ws; 128 px: 12 ws; 32 px: 8 ws (num_ws = 2 log2 R - 2)
    assert preset_layers("coarse", 18) == [0, 1, 2, 3]
    assert preset_layers("middle", 18) == [4, 5, 6, 7]
    assert preset_layers("fine", 18) == list(range(8, 18))
    assert preset_layers("fine", 12) == [8, 9, 10, 11]
    assert preset_layers("middle", 8) == [4, 5, 6, 7]
    with pytest.raises(ConfigError, match="selects no layer.*32 px"):
        preset_layers("fine", 8, 32)
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_layers("hair", 18)
    assert [band_resolution(i) for i in range(8)] == [4, 4, 8, 8, 16, 16, 32, 32]


def test_layer_table_matches_the_synthesis_network_by_hand(fixtures_dir):
    G = load_stylegan2_generator(fixtures_dir / FIXTURE)
    rows = [(r.name, r.w_index, r.kind, r.has_noise) for r in layer_table(G.synthesis)]
    assert rows == [
        ("b4.conv1", 0, "conv", True), ("b4.torgb", 1, "torgb", False),
        ("b8.conv0", 1, "conv", True), ("b8.conv1", 2, "conv", True), ("b8.torgb", 3, "torgb", False),
        ("b16.conv0", 3, "conv", True), ("b16.conv1", 4, "conv", True), ("b16.torgb", 5, "torgb", False),
        ("b32.conv0", 5, "conv", True), ("b32.conv1", 6, "conv", True), ("b32.torgb", 7, "torgb", False),
    ]
    # every index 0..num_ws-1 is read by some layer, and the highest by the final torgb
    assert {r[1] for r in rows} == set(range(G.num_ws))


def test_layer_specs_and_selection_errors():
    assert parse_layers("0-3, 6", 8) == [0, 1, 2, 3, 6]
    assert parse_layers([5, 1, 1], 8) == [1, 5]
    with pytest.raises(ConfigError, match="out of range"):
        parse_layers("0-8", 8)
    with pytest.raises(ConfigError, match="cannot read layer spec"):
        parse_layers("3-1", 8)
    assert resolve_layers(8, cutoff=3) == [0, 1, 2]
    with pytest.raises(ConfigError, match="exactly one"):
        resolve_layers(8, preset="coarse", cutoff=3)
    with pytest.raises(ConfigError, match="cutoff must be in"):
        resolve_layers(8, cutoff=9)


def test_pairing():
    ia, ib = pair_indices(2, 3, "all")
    assert ia.tolist() == [0, 0, 0, 1, 1, 1] and ib.tolist() == [0, 1, 2, 0, 1, 2]
    ia, ib = pair_indices(1, 3, "zip")
    assert ia.tolist() == [0, 0, 0] and ib.tolist() == [0, 1, 2]
    with pytest.raises(ConfigError, match="pairing 'all'"):
        pair_indices(2, 3, "zip")


def test_mix_ws_reproduces_the_official_cutoff_mix(reference):
    ws = reference["ws"]
    mixed = mix_ws(ws, ws.flip(0), list(range(3)))
    torch.testing.assert_close(mixed, reference["ws_mix_cutoff3"], rtol=0, atol=0)
    # interpolation weights 1/0 give the same; 0.5 gives the midpoint on every layer
    w = torch.tensor([1.0] * 3 + [0.0] * 5)
    torch.testing.assert_close(mix_ws(ws, ws.flip(0), w), reference["ws_mix_cutoff3"])
    half = mix_ws(ws, ws.flip(0), torch.full((8,), 0.5))
    torch.testing.assert_close(half, 0.5 * (ws + ws.flip(0)))


def test_style_mixer_mix_reproduces_the_official_images(fixtures_dir, reference):
    mixer = StyleMixer(fixtures_dir / FIXTURE, distance="pixel-gradient")
    ws = reference["ws"]
    out = mixer.mix(ws, ws.flip(0), cutoff=3, noise="const")
    torch.testing.assert_close(out.ws, reference["ws_mix_cutoff3"], rtol=0, atol=0)
    # raw synthesis output of the mixed styles equals the official image within 1e-4
    raw = mixer.G.synthesis(out.ws, noise_mode="const")
    assert (raw - reference["img_mix_cutoff3"]).abs().max() <= 1e-4
    assert (out.images - reference["img_mix_cutoff3"].clamp(-1, 1)).abs().max() <= 1e-4
    assert out.layers_from_a == [0, 1, 2] and out.index_b.tolist() == [0, 1, 2, 3]
    # the same with explicit layers, and all-pairs pairing contains the zipped mixes
    same = mixer.mix(ws, ws.flip(0), layers="0-2", noise="const")
    torch.testing.assert_close(same.images, out.images)
    every = mixer.mix(ws, ws.flip(0), cutoff=3, pairing="all", noise="const")
    assert every.images.shape[0] == 16
    torch.testing.assert_close(every.images[[0, 5, 10, 15]], out.images)
