"""load_stylegan2_generator: every supported file kind gives the reference generator; clear errors otherwise."""

import pytest
import torch
from mixing_helpers import FIXTURE

from multifeat.errors import CheckpointError, ConfigError
from multifeat.io.network_files import save_network
from multifeat.mixing import as_probability_fn, load_stylegan2_generator
from multifeat.nets.stylegan2 import Discriminator


def _images(G, ref):
    return G.synthesis(ref["ws"], noise_mode="const")


def test_fixture_dict_official_pickle_and_network_file_give_the_reference_images(fixtures_dir, tmp_path):
    ref = torch.load(fixtures_dir / FIXTURE, weights_only=True)
    g_dict = load_stylegan2_generator(fixtures_dir / FIXTURE)
    g_pkl = load_stylegan2_generator(fixtures_dir / "stylegan2ada" / "stylegan2ada_tiny_official_format.pkl")
    save_network(g_dict, tmp_path / "g.pt")
    g_file = load_stylegan2_generator(tmp_path / "g.pt")
    for g in (g_dict, g_pkl, g_file):
        assert not g.training and not any(p.requires_grad for p in g.parameters())
        assert (_images(g, ref) - ref["img_const"]).abs().max() <= 1e-4


def test_stylegan2ada_checkpoint_gives_its_ema_generator(tmp_path):
    from lightning import Trainer

    from multifeat.phases.stylegan2ada import StyleGAN2ADA

    torch.manual_seed(0)
    module = StyleGAN2ADA(image_size=8, z_dim=8, w_dim=8, channel_base=64, channel_max=8, augment=None, num_fixed=2)
    with torch.no_grad():  # make G_ema differ from G so the test can tell them apart
        for p in module.G_ema.parameters():
            p.add_(0.01)
    trainer = Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", devices=1,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "sg2.ckpt")
    g = load_stylegan2_generator(tmp_path / "sg2.ckpt")
    for k, v in module.G_ema.state_dict().items():
        torch.testing.assert_close(g.state_dict()[k], v)


def test_errors_name_the_file_and_what_was_found(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_stylegan2_generator(tmp_path / "missing.pkl")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_stylegan2_generator(tmp_path)
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match="junk.pkl"):
        load_stylegan2_generator(tmp_path / "junk.pkl")
    torch.save({"multifeat": {"phase": "phase1", "class_path": "x"}, "state_dict": {}}, tmp_path / "p1.ckpt")
    with pytest.raises(CheckpointError, match="phase1 checkpoint; style mixing needs a StyleGAN2 generator"):
        load_stylegan2_generator(tmp_path / "p1.ckpt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"not a StyleGAN2 generator.*\['weights'\]"):
        load_stylegan2_generator(tmp_path / "other.pt")
    d = Discriminator(c_dim=0, img_resolution=8, img_channels=3, channel_base=64, channel_max=8)
    save_network(d, tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match="not a StyleGAN2 Generator"):
        load_stylegan2_generator(tmp_path / "d.pt")


def test_classifiers_become_probability_functions():
    from multifeat.eval.evaluator import AttributeEvaluator
    from multifeat.phases.feature_classifier import FeatureClassifier

    torch.manual_seed(0)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    fc = FeatureClassifier(image_size=16, feature="beard", width=4, max_width=8).eval()
    fn = as_probability_fn(fc)
    small = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(fn(x), fc(small))
    with pytest.raises(ConfigError, match="judges 'beard', not 'bald'"):
        as_probability_fn(fc, "bald")
    ev = AttributeEvaluator(image_size=16, width=4, max_width=8).eval()
    fn = as_probability_fn(ev, "beard")
    torch.testing.assert_close(fn(x), torch.sigmoid(ev(small))[:, 1])
    with pytest.raises(ConfigError, match="name the feature"):
        as_probability_fn(ev)
    with pytest.raises(ConfigError, match="no attribute 'hat'"):
        as_probability_fn(ev, "hat")
