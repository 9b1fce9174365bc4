"""save_network / load_network: state dict + JSON config, atomic, weights-only."""

import json

import pytest
import torch

from multifeat.errors import CheckpointError, ConfigError
from multifeat.io.network_files import load_network, read_network_config, save_network
from multifeat.nets.stylegan2 import Discriminator, Generator


def _tiny_g():
    torch.manual_seed(0)
    return Generator(8, 2, 8, 8, 3, mapping_kwargs={"num_layers": 1},
                     synthesis_kwargs={"channel_base": 64, "channel_max": 8, "conv_clamp": 256})


def test_round_trip_reproduces_outputs(tmp_path):
    G = _tiny_g().eval()
    with torch.no_grad():
        G.mapping.w_avg.normal_()
    path = save_network(G, tmp_path / "g.pt")
    assert path.exists() and not list(tmp_path.glob("*.tmp"))
    config, state_dict = read_network_config(path)
    assert config["class_name"] == "multifeat.nets.stylegan2.Generator"
    assert config["init_kwargs"] == json.loads(json.dumps(G.init_kwargs))
    assert set(state_dict) == set(G.state_dict())

    G2 = load_network(path)
    assert isinstance(G2, Generator) and not G2.training
    z, c = torch.randn(3, 8), torch.eye(2)[[0, 1, 0]]
    with torch.no_grad():
        torch.testing.assert_close(G2(z, c, truncation_psi=0.5), G(z, c, truncation_psi=0.5), rtol=0, atol=0)

    D = Discriminator(2, 8, 3, channel_base=64, channel_max=8, epilogue_kwargs={"mbstd_group_size": 2})
    D2 = load_network(save_network(D, tmp_path / "d.pt"))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(D2(x, c[:2]), D.eval()(x, c[:2]), rtol=0, atol=0)


def test_file_is_plain_data(tmp_path):
    path = save_network(_tiny_g(), tmp_path / "g.pt")
    payload = torch.load(path, weights_only=True)  # would raise if the file referenced any class
    assert isinstance(payload["config"], str) and payload["format"] == "multifeat.network"


def test_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_network(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_network(corrupt)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a multifeat network file"):
        load_network(other)

    path = save_network(_tiny_g(), tmp_path / "g.pt")
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["synthesis.b8.conv0.weight"]
    payload["state_dict"]["mapping.fc0.bias"] = torch.zeros(3)
    broken = tmp_path / "broken.pt"
    torch.save(payload, broken)
    with pytest.raises(CheckpointError, match=r"missing: synthesis\.b8\.conv0\.weight.*wrong shape: mapping\.fc0\.bias"):
        load_network(broken)

    payload = torch.load(path, weights_only=True)
    payload["config"] = json.dumps({"class_name": "os.system", "init_kwargs": {}})
    foreign = tmp_path / "foreign.pt"
    torch.save(payload, foreign)
    with pytest.raises(CheckpointError, match="os.system"):
        load_network(foreign)

    with pytest.raises(ConfigError, match="not a registered network"):
        save_network(torch.nn.Linear(2, 2), tmp_path / "linear.pt")
