"""The immature-generator bank (version 2): its generators are the demo's phase-1 networks, its EMA
follows the ramp-up by hand, and a bank is deterministic for its seed and cached."""

from pathlib import Path

import pytest
import torch
import yaml

from multifeat.errors import ConfigError, DataError
from multifeat.eval.immature import (
    EMA_DECAY,
    EMA_RAMPUP,
    IMMATURE_GENERATORS,
    IMMATURE_SEED,
    IMMATURE_STEPS,
    IMMATURE_VERSION,
    ImmatureGenerator,
    _ema_update,
    build_pair,
    generator_steps,
    immature_bank,
    train_immature_generators,
)

REPO = Path(__file__).resolve().parents[2]

# two cheap generators of the bank's kinds: one with an EMA and the demo's D, one without and a narrow D
TINY = (
    ImmatureGenerator((("bald", True), ("beard", False)), "beard", d_width=32, max_step=2, num_faces=64),
    ImmatureGenerator((("bald", False),), "bald", d_width=16, max_step=1, ema=False, num_faces=64),
)


def test_bank_v2_is_what_the_docs_say():
    assert IMMATURE_VERSION == 2 and IMMATURE_STEPS[-1] == 1000 and IMMATURE_SEED >= 30_000
    demo = [g for g in IMMATURE_GENERATORS if dict(g.require) == {"bald": True, "beard": False}]
    assert [g.d_width for g in demo] == [32, 32, 16]
    assert all(g.lacks == "beard" and g.max_step == 1000 and g.ema and g.num_faces == 2048 for g in demo)
    assert {g.lacks for g in IMMATURE_GENERATORS} == {"bald", "beard"}
    assert (EMA_DECAY, EMA_RAMPUP) == (0.99, 0.05)
    # every generator's seeds (faces and weights; fixed noise + 1) avoid the seeds of the judge (10 000),
    # the real reference (20 000), the held-out faces (31 337) and the phases and probes (< 1 000)
    seeds = {IMMATURE_SEED + 1000 * i + k for i in range(len(IMMATURE_GENERATORS)) for k in (0, 1)}
    assert min(seeds) >= 30_000 and not seeds & {10_000, 20_000, 31_337}
    assert generator_steps(IMMATURE_GENERATORS[-1], IMMATURE_STEPS) == (25, 50, 100, 150, 200, 300, 400)
    assert generator_steps(IMMATURE_GENERATORS[0], IMMATURE_STEPS) == IMMATURE_STEPS


def test_bank_networks_are_the_demo_phase1_networks():
    """The bank's G and D of D width 32 have exactly the parameter shapes of the demo's Phase1GAN."""
    from multifeat.phases.phase1 import Phase1GAN

    cfg = yaml.safe_load((REPO / "experiments" / "method_a.yaml").read_text())["phase1"]["model"]["init_args"]
    demo = Phase1GAN(**cfg)
    g, d = build_pair(IMMATURE_GENERATORS[0], cfg["image_size"])
    assert [p.shape for p in g.state_dict().values()] == [p.shape for p in demo.generator.state_dict().values()]
    assert [p.shape for p in d.state_dict().values()] == [p.shape for p in demo.discriminator.state_dict().values()]
    _, narrow = build_pair(IMMATURE_GENERATORS[2], cfg["image_size"])
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in d.parameters())


def test_ema_ramp_up_by_hand():
    g, ema = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        g.weight.fill_(0.0)
        ema.weight.fill_(1.0)
    _ema_update(ema, g, images_before=0, batch=32)  # first update: the average copies G
    assert ema.weight.item() == 0.0
    ema.weight.data.fill_(1.0)
    # 320 images seen: half-life capped at 0.05 * 320 = 16 images, so the decay is 0.5 ** (32 / 16) = 0.25
    _ema_update(ema, g, images_before=320, batch=32)
    assert ema.weight.item() == pytest.approx(0.25)
    ema.weight.data.fill_(1.0)
    _ema_update(ema, g, images_before=10**7, batch=32)  # ramp-up over: the full decay
    assert ema.weight.item() == pytest.approx(EMA_DECAY)


def test_bank_is_deterministic_and_cached(tmp_path):
    a = train_immature_generators(16, seed=5, steps=(1, 2), per_snapshot=2, generators=TINY)
    b = train_immature_generators(16, seed=5, steps=(1, 2), per_snapshot=2, generators=TINY)
    c = train_immature_generators(16, seed=6, steps=(1, 2), per_snapshot=2, generators=TINY)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    # generator 0: steps 1 and 2, live and EMA; generator 1 (max_step 1, no EMA): step 1, live only
    assert a.images.shape == (2 * 2 * 2 + 2, 3, 16, 16) and a.images.dtype == torch.uint8
    assert a.sources == ["g0"] * 2 + ["g0-ema"] * 2 + ["g0"] * 2 + ["g0-ema"] * 2 + ["g1"] * 2
    assert a.steps == [1] * 4 + [2] * 4 + [1] * 2 and a.lacks == ["beard"] * 8 + ["bald"] * 2
    # after the first update the EMA copies G; after the second (32 images seen, half-life capped at
    # 1.6 images: decay 0.5 ** 20) it is G but for a millionth of the old weights: images within one level
    assert torch.equal(a.images[0:2], a.images[2:4])
    assert (a.images[4:6].int() - a.images[6:8].int()).abs().max() <= 1
    before = torch.get_rng_state()
    cached = immature_bank(16, seed=5, steps=(1, 2), per_snapshot=2, cache_dir=tmp_path, log=None, generators=TINY)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random stream is untouched
    assert torch.equal(cached.images, a.images) and len(list(tmp_path.glob("immature-S16-*.pt"))) == 1
    again = immature_bank(16, seed=5, steps=(1, 2), per_snapshot=2, cache_dir=tmp_path, log=None, generators=TINY)
    assert torch.equal(again.images, a.images) and again.sources == a.sources
    with pytest.raises(ConfigError, match="immature_steps"):
        immature_bank(16, steps=(4, 2), cache_dir=tmp_path, log=None)


def test_a_subset_that_holds_its_lacking_feature_is_refused():
    wrong = (ImmatureGenerator((("bald", True),), "bald", max_step=1, ema=False, num_faces=8),)
    with pytest.raises(DataError, match="holds images with 'bald'"):
        train_immature_generators(16, steps=(1,), per_snapshot=1, generators=wrong)
