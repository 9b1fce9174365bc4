"""Loading the FID InceptionV3 weights: a random stand-in of the real file format, never a download.

The real file (torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``) is a legacy-format
state dict of 566 tensors: 94 conv + batch-norm units (conv weight, bn weight, bias, running mean,
running variance, batch counter) and the 1008-way head ``fc`` (weight 1008x2048, bias). The stand-in
below has those names and shapes with random values; the tests that run the network need the
optional torch-fidelity package and are skipped without it.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from multifeat.errors import CheckpointError, ConfigError
from multifeat.eval import features as FT

# a few shapes of the FID Inception network, from its definition (in_channels -> out_channels, kernel)
KNOWN_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.bn.running_var": (192,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_6e.branch7x7_2.conv.weight": (192, 192, 1, 7),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}


def _stand_in_state() -> dict[str, torch.Tensor]:
    from torchvision.models.inception import Inception3

    with torch.device("meta"):
        net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    g = torch.Generator().manual_seed(0)
    state = {}
    for k, v in net.state_dict().items():
        # random, scaled so that the signal survives 94 layers (He initialisation, near-identity batch norms)
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(0, dtype=torch.long)
        elif k.endswith(("running_var", "bn.weight")):
            state[k] = 1 + 0.1 * torch.rand(v.shape, generator=g)
        elif k.endswith(("running_mean", "bn.bias")):
            state[k] = 0.01 * torch.randn(v.shape, generator=g)
        else:
            fan_in = v[0].numel()
            state[k] = torch.randn(v.shape, generator=g) * (2.0 / fan_in) ** 0.5
    return state


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    state = _stand_in_state()
    assert len(state) == 566
    for k, shape in KNOWN_SHAPES.items():
        assert tuple(state[k].shape) == shape, k
    path = tmp_path_factory.mktemp("inception") / FT.INCEPTION_WEIGHTS_FILE
    torch.save(state, path, _use_new_zipfile_serialization=False)  # the real file's legacy serialisation
    return path, state


@pytest.fixture(autouse=True)
def _fresh_warnings():
    FT._WARNED.clear()
    yield
    FT._WARNED.clear()


def _save(state, path):
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path


def test_stand_in_of_the_real_format_is_accepted(stand_in):
    path, state = stand_in
    with open(path, "rb") as f:
        assert f.read(2) != b"PK"  # legacy serialisation, not a zip archive
    loaded = FT.check_inception_weights(path)
    assert len(loaded) == FT.INCEPTION_NUM_TENSORS == 566
    assert loaded.keys() == state.keys()
    for k in ("fc.weight", "Mixed_7c.branch_pool.bn.running_var", "Conv2d_1a_3x3.bn.num_batches_tracked"):
        assert torch.equal(loaded[k], state[k]), k


def test_wrong_keys_and_shapes_are_rejected_naming_the_file(stand_in, tmp_path):
    _, state = stand_in
    renamed = dict(state)
    renamed["fc.kernel"] = renamed.pop("fc.weight")
    p = _save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match=r"renamed\.pth.*1 missing \(fc\.weight\), 1 unexpected \(fc\.kernel\)"):
        FT.check_inception_weights(p)

    head = dict(state, **{"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})  # an ImageNet-1000 head
    p = _save(head, tmp_path / "imagenet_head.pth")
    with pytest.raises(CheckpointError, match=r"imagenet_head\.pth.*2 of the wrong shape.*fc\.weight \[1000, 2048\] instead of \[1008, 2048\]"):
        FT.check_inception_weights(p)

    few = {k: state[k] for k in list(state)[:10]}
    p = _save(few, tmp_path / "few.pth")
    with pytest.raises(CheckpointError, match=r"few\.pth.*10 tensors, 556 missing"):
        FT.check_inception_weights(p)

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match=r"junk\.pth.*cannot be read.*566 tensors"):
        FT.check_inception_weights(junk)

    wrapped = _save({"state_dict": {"a": torch.zeros(1)}}, tmp_path / "wrapped.pth")
    with pytest.raises(CheckpointError, match=r"wrapped\.pth.*not a state dict of tensors"):
        FT.check_inception_weights(wrapped)

    # InceptionFeatures checks the file before anything else (with or without torch-fidelity)
    with pytest.raises(CheckpointError, match=r"imagenet_head\.pth"):
        FT.InceptionFeatures(tmp_path / "imagenet_head.pth")


def test_weights_are_looked_for_at_the_explicit_path_then_in_the_hub_cache(stand_in, tmp_path, monkeypatch):
    path, _ = stand_in
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    assert FT.default_inception_weights() == hub / "checkpoints" / FT.INCEPTION_WEIGHTS_FILE
    assert FT.find_inception_weights() is None
    assert FT.find_inception_weights(path) == path
    with pytest.raises(ConfigError, match=r"nowhere\.pth' not found"):
        FT.find_inception_weights(tmp_path / "nowhere.pth")
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / FT.INCEPTION_WEIGHTS_FILE).symlink_to(path)
    assert FT.find_inception_weights() == hub / "checkpoints" / FT.INCEPTION_WEIGHTS_FILE


def test_auto_says_once_why_and_falls_back_without_downloading(colour_evaluator, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(FT, "torch_fidelity_available", lambda: True)  # only the file is missing

    def no_download(*a, **k):
        raise AssertionError("nothing may be downloaded unless allowed")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = [FT.select_extractor("auto", evaluator=colour_evaluator)[1] for _ in range(3)]
    assert all(n.startswith("evaluator (ConvClassifier features, 3-d)") for n in names)
    said = [w for w in caught if issubclass(w.category, FT.InceptionUnavailableWarning)]
    assert len(said) == 1
    msg = str(said[0].message)
    assert FT.INCEPTION_WEIGHTS_FILE in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "--inception-weights" in msg and "downloading is off" in msg and "evaluator's features" in msg
    with pytest.raises(ConfigError, match="InceptionV3 features are unavailable: no weight file"):
        FT.select_extractor("inception", evaluator=colour_evaluator)


def test_missing_package_is_named_with_what_to_install(stand_in, colour_evaluator, monkeypatch):
    path, _ = stand_in
    monkeypatch.setattr(FT, "torch_fidelity_available", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, name = FT.select_extractor("auto", evaluator=colour_evaluator, inception_weights=path)
    assert name.startswith("evaluator")
    (w,) = [w for w in caught if issubclass(w.category, FT.InceptionUnavailableWarning)]
    assert "torch-fidelity package is not installed" in str(w.message) and "pip install torch-fidelity" in str(w.message)
    with pytest.raises(ConfigError, match=r"need the torch-fidelity package.*pip install torch-fidelity"):
        FT.InceptionFeatures(path)
    with pytest.raises(ConfigError, match="torch-fidelity package is not installed"):
        FT.select_extractor("inception", evaluator=colour_evaluator, inception_weights=path)


# ------------------------------------------------------------------ with torch-fidelity installed
def _fidelity_reference(path):
    pytest.importorskip("torch_fidelity")
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))


def test_stand_in_runs_through_torchmetrics_like_torch_fidelity(stand_in):
    """Our extractor (torchmetrics' NoTrainInceptionV3 on the checked file) gives torch-fidelity's own
    2048-d features for the same uint8 images (TensorFlow-compatible resize, no antialiasing)."""
    path, _ = stand_in
    ref = _fidelity_reference(path)
    ext, name = FT.select_extractor("auto", inception_weights=path)
    assert isinstance(ext, FT.InceptionFeatures) and name == FT.INCEPTION_NAME and ext.num_features == 2048
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    feats = ext(images)
    assert feats.shape == (2, 2048) and feats.dtype == torch.float64
    uint8 = ((images + 1) * 127.5).round().to(torch.uint8)
    with torch.no_grad():
        (expected,) = ref(uint8)
    torch.testing.assert_close(feats.float(), expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(feats[0], feats[1])  # different images, different features


def test_allowed_download_goes_through_torch_fidelity_into_the_hub_cache(stand_in, tmp_path, monkeypatch):
    """With ``allow_download`` and no local file, torch-fidelity's own loader is called with its URL
    (replaced here by the stand-in: no network)."""
    path, state = stand_in
    pytest.importorskip("torch_fidelity")
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    calls = []
    monkeypatch.setattr(tfi, "load_state_dict_from_url", lambda url, **kw: calls.append(url) or dict(state))
    with pytest.raises(ConfigError, match="downloading is off"):
        FT.select_extractor("inception")
    ext, name = FT.select_extractor("inception", allow_download=True)
    assert calls == [FT.INCEPTION_WEIGHTS_URL] and name == FT.INCEPTION_NAME
    assert ext(torch.zeros(1, 3, 16, 16)).shape == (1, 2048)
