"""The safe loader of official StyleGAN2-ADA pickles: it rebuilds the networks and never runs code."""

import copy
import pickle
import sys
import types

import pytest
import torch

from multifeat.errors import CheckpointError, UnsafePickleError
from multifeat.io.official_pickle import (
    OfficialObject,
    build_augment_pipe,
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
