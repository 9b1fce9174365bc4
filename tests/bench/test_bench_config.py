"""The benchmark protocol is parsed and type-checked by jsonargparse against the typed sections of
``multifeat.bench.schema``; the values come from the YAML files only."""

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from multifeat.bench import protocol as B
from multifeat.bench.schema import Protocol, parse_protocol
from multifeat.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("override, match", [
    ("gan.lr=fast", r"gan\.lr: Expected a <class 'float'>\. Got value: fast"),
    ("eval.n=[3]", r"eval\.n: Expected a <class 'int'>"),
    ("data.source=imagenet", r"data\.source: Expected a typing\.Literal\['synthetic', 'celeba'\]\. Got value: imagenet"),
    ("method_a.phase3.add_blocks={x: 1}", r"method_a\.phase3\.add_blocks: "),
    ("method_b.styles=mixed", r"method_b\.styles: .*'sampled', 'projected'"),
])
def test_wrong_types_name_the_key_and_the_expected_type(override, match):
    with pytest.raises(ConfigError, match=match):
        B.load_config(None, overrides=[override])


def test_unknown_key_in_a_file_is_named(tmp_path):
    bad = tmp_path / "b.yaml"
    bad.write_text("method_a: {phase3: {alpah: [1, 1, 0]}}\n")
    with pytest.raises(ConfigError, match=r"method_a\.phase3: unknown key 'alpah'"):
        B.load_config(bad)


def test_every_protocol_key_has_a_type_and_no_python_default():
    """The schema and the default protocol list the same keys; values only in YAML (Optional fields carry
    None because jsonargparse needs it to accept null, nothing else has a default)."""
    default = B.default_config()

    def walk(cls, data, path=""):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert set(fields) == set(data), path
        for name, f in fields.items():
            assert f.default in (dataclasses.MISSING, None), f"{path}{name}"
            assert f.default_factory is dataclasses.MISSING
            sub = f.type if isinstance(f.type, type) else None
            if sub is not None and dataclasses.is_dataclass(sub):
                walk(sub, data[name], f"{path}{name}.")

    import typing

    hints = typing.get_type_hints(Protocol)
    for f in dataclasses.fields(Protocol):
        f.type = hints[f.name]
    walk(Protocol, default)


def test_parsed_protocols_keep_their_values_and_hash():
    for path, preset in [(None, None), (None, "smoke"), (REPO / "experiments" / "celeba" / "bench.yaml", None),
                         (REPO / "experiments" / "celeba_cpu" / "bench.yaml", None)]:
        cfg = B.load_config(path, preset=preset)
        assert parse_protocol(cfg) == cfg


@pytest.mark.parametrize("flag", ["--print_config", "--print-config"])
def test_print_config_flags(flag, tmp_path):
    r = subprocess.run([sys.executable, "-m", "multifeat.cli", "bench", "--smoke", "--set", "gan.steps=5", flag],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("# resolved from: ") and "presets/smoke.yaml" in lines[0] and "gan.steps=5" in lines[0]
    printed = yaml.safe_load(r.stdout)
    assert printed["gan"]["steps"] == 5 and printed["image_size"] == 16
    assert lines[1] == f"# protocol hash: {B.protocol_hash(B.load_config(None, preset='smoke', overrides=['gan.steps=5']))}"


def test_upsampling_reaches_every_dcgan_and_the_hash_keeps_earlier_records():
    """``gan.upsample: transpose`` is what the protocol did before the key existed: the hash stays the
    one of the published records; ``nearest`` is another protocol and builds nearest-upsampling
    generators for a, f, g and Method A's G1."""
    from types import SimpleNamespace

    from multifeat.bench.methods import _dcgan, method_a_config

    cfg = B.load_config(None)
    assert cfg["gan"]["upsample"] == "transpose"
    assert B.protocol_hash(cfg) == "384a61a3883bbfc6"  # the hash of the runs in docs/benchmark.md
    nearest = B.load_config(None, overrides=["gan.upsample=nearest"])
    assert B.protocol_hash(nearest) != B.protocol_hash(cfg)
    ctx = SimpleNamespace(config=nearest, image_size=int(nearest["image_size"]), features=list(nearest["features"]),
                          synthetic=True, source="synthetic")
    assert _dcgan(ctx).generator.upsample == "nearest"
    assert method_a_config(ctx, 0, "c")["phase1"]["model"]["init_args"]["upsample"] == "nearest"
    with pytest.raises(ConfigError, match=r"gan\.upsample: Expected a typing\.Literal\['transpose', 'nearest'\]"):
        B.load_config(None, overrides=["gan.upsample=bilinear"])


def test_keys_added_later_leave_the_hash_at_their_earlier_behaviour_only():
    from multifeat.bench import forgetting as F
    from multifeat.utils.config import drop_at_values

    cfg = {"a": {"b": 1, "c": {"d": "x"}}, "e": 2}
    assert drop_at_values(copy.deepcopy(cfg), {"a.c.d": "x", "a.b": 0, "z.y": 1}) == {"a": {"b": 1, "c": {}}, "e": 2}
    for key, before in B.LATER_KEYS.items():
        base = B.load_config(None)
        other = {"transpose": "nearest", 0: 2, 0.8: 0.5}[before]
        assert B.protocol_hash(B.load_config(None, overrides=[f"{key}={other}"])) != B.protocol_hash(base), key
    with pytest.raises(ConfigError, match=r"^method_a\.phase3\.d2_view_p must be a probability in \(0, 1\], got 1\.5$"):
        B.load_config(None, overrides=["method_a.phase3.d2_view_p=1.5"])
    with pytest.raises(ConfigError, match=r"^method_a\.phase3\.d2_views must be an integer >= 0 .*got -1$"):
        B.load_config(None, overrides=["method_a.phase3.d2_views=-1"])
    fcfg = F.load_config(None)
    assert F.config_hash(fcfg) == "e2cd75c4c0137b98"  # the experiment of docs/forgetting.md
    changed = copy.deepcopy(fcfg)
    changed["phase3"]["d2_views"] = 2
    assert F.config_hash(changed) != F.config_hash(fcfg)


def test_hashing_leaves_the_config_as_it_was():
    from multifeat.bench import forgetting as F

    for cfg, fn in ((B.load_config(None), B.protocol_hash), (F.load_config(None), F.config_hash)):
        before = copy.deepcopy(cfg)
        fn(cfg)
        assert cfg == before
