"""The safe loader of official StyleGAN2-ADA pickles: it rebuilds the networks and never runs code."""

import copy
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from multifeat.errors import CheckpointError, UnsafePickleError
from multifeat.io.official_pickle import (
    OfficialObject,
    StyleGAN3PickleError,
    TensorFlowPickleError,
    UnsupportedPickleError,
    build_augment_pipe,
    identify_foreign_pickle,
    load_official_pickle,
    read_official_pickle,
)
from multifeat.nets.stylegan2 import Discriminator, Generator


@pytest.fixture
def official_pkl(fixtures_dir):
    return fixtures_dir / "stylegan2ada" / "stylegan2ada_tiny_official_format.pkl"


@pytest.fixture
def reference(fixtures_dir):
    return torch.load(fixtures_dir / "stylegan2ada" / "stylegan2ada_tiny_reference.pt", weights_only=True)


@pytest.fixture
def official_persistence(monkeypatch):
    """Install a stand-in for the official ``torch_utils.persistence`` that behaves like it does on a
    plain ``pickle.load``: it *executes* the embedded module source. Used to write official-format
    pickles and to show that the exploit pickles below really are exploits."""

    class Persistent:
        def __init__(self, meta):
            self.meta = meta

        def __reduce__(self):
            return (persistence._reconstruct_persistent_obj, (self.meta,))

    def _reconstruct_persistent_obj(meta):
        module = types.ModuleType("_official_module")
        exec(compile(meta["module_src"], "<module_src>", "exec"), module.__dict__)  # what the official code does
        return Persistent(meta)

    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    package = types.ModuleType("torch_utils")
    package.persistence = persistence
    monkeypatch.setitem(sys.modules, "torch_utils", package)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", persistence)
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    return Persistent


def _to_persistent(obj, Persistent, module_src):
    """OfficialObject records (from read_official_pickle) -> official-format persistent objects."""
    if isinstance(obj, OfficialObject):
        state = dict(obj.state)
        state["_modules"] = type(state["_modules"])(
            (k, _to_persistent(v, Persistent, module_src)) for k, v in state["_modules"].items()
        )
        meta = {"type": "class", "version": obj.version, "module_src": module_src,
                "class_name": obj.class_name, "state": state}
        return Persistent(meta)
    if isinstance(obj, dict):
        return {k: _to_persistent(v, Persistent, module_src) for k, v in obj.items()}
    return obj


def _rewrite(official_pkl, path, Persistent, module_src="# nothing\n", edit=None):
    raw = read_official_pickle(official_pkl)
    if edit is not None:
        edit(raw)
    with open(path, "wb") as f:
        pickle.dump(_to_persistent(raw, Persistent, module_src), f, protocol=3)
    return path


def test_official_format_pickle_loads_and_reproduces_fixture(official_pkl, reference):
    nets = load_official_pickle(official_pkl)
    assert set(nets) == {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}
    assert isinstance(nets["G_ema"], Generator) and isinstance(nets["D"], Discriminator)
    assert nets["augment_pipe"] is None and nets["training_set_kwargs"]["resolution"] == 32
    assert not nets["G_ema"].training
    G = nets["G_ema"]
    with torch.no_grad():
        err = (G.synthesis(reference["ws"], noise_mode="const") - reference["img_const"]).abs().max().item()
        err_z = (G(reference["z"], None) - reference["img_const"]).abs().max().item()
        err_d = (nets["D"](reference["x_real"]) - reference["D_logits_of_x_real"]).abs().max().item()
    print(f"official pickle G_ema img_const error {err:.2e}, G_ema(z) {err_z:.2e}, D(x_real) {err_d:.2e}")
    assert err <= 1e-4 and err_z <= 1e-4 and err_d <= 1e-4
    for k, v in nets["G"].state_dict().items():
        assert torch.equal(v, reference["G_state_dict"][k]), k


def _raw_global_pickle(module, name, arg):
    """Protocol-0 pickle calling ``module.name(arg)``."""
    return f"c{module}\n{name}\n(V{arg}\ntR.".encode()


@pytest.mark.parametrize(
    "module,name,payload",
    [
        ("os", "system", "touch {marker}"),
        ("posix", "system", "touch {marker}"),
        ("builtins", "eval", "open('{marker}', 'w').write('ran')"),
        ("builtins", "exec", "open('{marker}', 'w').write('ran')"),
        ("subprocess", "Popen", "touch {marker}"),
        ("torch", "load", "{marker}"),
    ],
)
def test_dangerous_globals_are_refused(tmp_path, module, name, payload):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(_raw_global_pickle(module, name, payload.format(marker=marker)))
    with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
        load_official_pickle(path)
    assert not marker.exists()


def test_exploit_pickle_is_live_under_plain_pickle(tmp_path):
    """Control: the same bytes do run code when loaded the ordinary way."""
    marker = tmp_path / "marker"
    data = _raw_global_pickle("builtins", "exec", f"open('{marker}', 'w').write('ran')")
    pickle.loads(data)
    assert marker.exists()


def test_dangerous_global_nested_in_network_state_is_refused(tmp_path, official_pkl, official_persistence):
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            return (eval, (f"open('{marker}', 'w').write('ran')",))

    def edit(raw):
        raw["G_ema"].state["_modules"]["mapping"].state["extra"] = Evil()

    path = _rewrite(official_pkl, tmp_path / "nested.pkl", official_persistence, edit=edit)
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        load_official_pickle(path)
    assert not marker.exists()


def test_embedded_module_source_is_never_executed(tmp_path, official_pkl, official_persistence, reference):
    marker = tmp_path / "marker"
    src = f"open({str(marker)!r}, 'w').write('module source ran')\n"
    path = _rewrite(official_pkl, tmp_path / "exploit.pkl", official_persistence, module_src=src)

    nets = load_official_pickle(path)  # loads fine ...
    assert not marker.exists()  # ... and nothing ran
    with torch.no_grad():
        err = (nets["G_ema"](reference["z"], None) - reference["img_const"]).abs().max().item()
    assert err <= 1e-4

    # control: the official mechanism executes the very same file's module source
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.read_text() == "module source ran"


def test_unknown_persistent_class_is_refused(tmp_path, official_pkl, official_persistence):
    def edit(raw):
        raw["G"].class_name = "PayloadRunner"

    path = _rewrite(official_pkl, tmp_path / "unknown.pkl", official_persistence, edit=edit)
    with pytest.raises(UnsafePickleError, match="PayloadRunner"):
        load_official_pickle(path)


def test_storage_bytes_are_loaded_weights_only(tmp_path):
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open('{marker}', 'w').write('ran')",))

    import io

    buf = io.BytesIO()
    torch.save(Evil(), buf)

    class Storage:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (buf.getvalue(),))

    path = tmp_path / "storage.pkl"
    path.write_bytes(pickle.dumps({"G": Storage()}, protocol=3))
    with pytest.raises(UnsafePickleError, match="storage"):
        load_official_pickle(path)
    assert not marker.exists()


def test_state_that_does_not_match_its_arguments_is_a_checkpoint_error(tmp_path, official_pkl, official_persistence):
    def edit(raw):
        raw["G_ema"].state["_init_kwargs"] = dict(raw["G_ema"].init_kwargs, w_dim=64)

    path = _rewrite(official_pkl, tmp_path / "mismatch.pkl", official_persistence, edit=edit)
    with pytest.raises(CheckpointError, match="G_ema"):
        load_official_pickle(path)

    def edit_missing(raw):
        del raw["D"].state["_modules"]["b4"].state["_modules"]["out"].state["_parameters"]["bias"]

    path = _rewrite(official_pkl, tmp_path / "missing.pkl", official_persistence, edit=edit_missing)
    with pytest.raises(CheckpointError, match="b4.out.bias"):
        load_official_pickle(path)


def test_augment_pipe_entry_is_returned_as_data(tmp_path, official_pkl, official_persistence):
    def edit(raw):
        state = copy.deepcopy(raw["G"].state)
        state.update(_parameters={}, _modules={}, _init_args=(),
                     _init_kwargs={"xflip": 1, "rotate90": 1, "brightness": 1, "imgfilter": 0})
        state["_buffers"] = {"p": torch.tensor(0.25)}
        raw["augment_pipe"] = OfficialObject("AugmentPipe", (), state["_init_kwargs"], state, 6)

    path = _rewrite(official_pkl, tmp_path / "aug.pkl", official_persistence, edit=edit)
    nets = load_official_pickle(path)
    info = nets["augment_pipe"]
    assert info["class_name"] == "AugmentPipe" and info["p"] == pytest.approx(0.25)
    assert info["init_kwargs"]["xflip"] == 1
    pipe = build_augment_pipe(info)
    assert float(pipe.p) == pytest.approx(0.25)


def test_missing_truncated_and_foreign_files(tmp_path, official_pkl):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_official_pickle(tmp_path / "nope.pkl")
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(official_pkl.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated.pkl"):
        load_official_pickle(truncated)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match="no network"):
        load_official_pickle(plain)


def test_easydict_arguments_of_real_training_runs_load(tmp_path, official_pkl, official_persistence, monkeypatch,
                                                        reference):
    """Real snapshots store nested constructor arguments as dnnlib.util.EasyDict."""

    class EasyDict(dict):
        pass

    util = types.ModuleType("dnnlib.util")
    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    util.EasyDict = EasyDict
    monkeypatch.setitem(sys.modules, "dnnlib", types.ModuleType("dnnlib"))
    monkeypatch.setitem(sys.modules, "dnnlib.util", util)

    def edit(raw):
        kwargs = dict(raw["G_ema"].state["_init_kwargs"])
        kwargs["mapping_kwargs"] = EasyDict(kwargs["mapping_kwargs"])
        kwargs["synthesis_kwargs"] = EasyDict(kwargs["synthesis_kwargs"])
        raw["G_ema"].state["_init_kwargs"] = kwargs

    path = _rewrite(official_pkl, tmp_path / "easydict.pkl", official_persistence, edit=edit)
    assert b"dnnlib.util" in path.read_bytes()
    G = load_official_pickle(path)["G_ema"]
    assert type(G.init_kwargs["mapping_kwargs"]) is dict
    with torch.no_grad():
        assert (G(reference["z"], None) - reference["img_const"]).abs().max().item() <= 1e-4


# -- other formats: legacy TensorFlow and StyleGAN3 pickles ----------------------------------------


def _tf_network_class(monkeypatch, marker):
    """A stand-in for ``dnnlib.tflib.network.Network``: pickles the way the TensorFlow release does
    (``__getstate__`` -> version, name, kwargs, build module source, variables as numpy arrays)."""

    class Network:
        def __init__(self, name):
            self.name = name

        def __getstate__(self):
            return {"version": 4, "name": self.name, "static_kwargs": {"resolution": 8},
                    "build_module_src": f"open({str(marker)!r}, 'w').write('ran')\n",
                    "build_func_name": f"{self.name}_main",
                    "variables": [(f"{self.name}/4x4/Const/const", np.zeros((1, 8, 4, 4), np.float32))]}

        def __setstate__(self, state):  # what the TensorFlow release does on a plain pickle.load
            exec(state["build_module_src"], {})

    for name in ("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    Network.__module__ = "dnnlib.tflib.network"
    Network.__qualname__ = "Network"
    sys.modules["dnnlib.tflib.network"].Network = Network
    return Network


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_legacy_tensorflow_pickle_gets_conversion_advice(tmp_path, monkeypatch, protocol):
    marker = tmp_path / "marker"
    Network = _tf_network_class(monkeypatch, marker)
    path = tmp_path / "stylegan2-ffhq-config-f.pkl"
    path.write_bytes(pickle.dumps((Network("G"), Network("D"), Network("Gs")), protocol=protocol))
    assert identify_foreign_pickle(path) == "tensorflow"
    with pytest.raises(TensorFlowPickleError) as info:
        load_official_pickle(path)
    msg = str(info.value)
    assert "legacy TensorFlow" in msg and "dnnlib.tflib.network.Network" in msg
    assert f"legacy.py --source={path} --dest=" in msg
    assert isinstance(info.value, (UnsupportedPickleError, CheckpointError)) and not isinstance(info.value,
                                                                                                UnsafePickleError)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # control: the TensorFlow release's own unpickling runs the module source
    assert marker.exists()


def _stylegan3_like(Persistent, with_numpy: bool):
    """Official persistence records shaped like a StyleGAN3 generator: synthesis.input is a SynthesisInput
    (its real state holds numpy arrays, e.g. ``size``), synthesis.L0_36_512 a SynthesisLayer."""
    src = "class SynthesisInput(torch.nn.Module):\n    pass  # stand-in source, never run\n"

    def obj(class_name, modules=None, extra=None):
        state = {"training": False, "_parameters": {}, "_buffers": {}, "_non_persistent_buffers_set": set(),
                 "_modules": dict(modules or {}), "_init_args": (), "_init_kwargs": {}}
        state.update(extra or {})
        return Persistent({"type": "class", "version": 6, "module_src": src, "class_name": class_name,
                           "state": state})

    extra = {"size": np.array([36, 36])} if with_numpy else {"w_dim": 8}
    synthesis = obj("SynthesisNetwork", {"input": obj("SynthesisInput", extra=extra),
                                         "L0_36_512": obj("SynthesisLayer")})
    gen = obj("Generator", {"synthesis": synthesis, "mapping": obj("MappingNetwork")},
              {"_init_kwargs": {"z_dim": 8, "w_dim": 8, "c_dim": 0, "img_resolution": 16, "img_channels": 3}})
    return {"G": gen, "D": None, "G_ema": gen, "augment_pipe": None, "training_set_kwargs": {"resolution": 16}}


@pytest.mark.parametrize("with_numpy", [True, False])
def test_stylegan3_pickle_names_the_architecture(tmp_path, official_persistence, with_numpy):
    path = tmp_path / "stylegan3-t-ffhq-1024x1024.pkl"
    path.write_bytes(pickle.dumps(_stylegan3_like(official_persistence, with_numpy), protocol=4))
    assert identify_foreign_pickle(path) == "stylegan3"
    with pytest.raises(StyleGAN3PickleError) as info:
        load_official_pickle(path)
    msg = str(info.value)
    assert "StyleGAN3" in msg and "training.networks_stylegan3" in msg and "SynthesisInput" in msg
    assert "StyleGAN2-ADA" in msg and "Nothing in this file was run" in msg
    assert not isinstance(info.value, UnsafePickleError)


def test_official_and_unsafe_pickles_are_not_mistaken_for_other_formats(tmp_path, official_pkl):
    assert identify_foreign_pickle(official_pkl) is None
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(_raw_global_pickle("os", "system", "true"))
    assert identify_foreign_pickle(evil) is None
    with pytest.raises(UnsafePickleError):
        load_official_pickle(evil)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"\x80\x04not a pickle")
    assert identify_foreign_pickle(garbage) is None
