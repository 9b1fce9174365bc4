"""Safe loading of official StyleGAN2-ADA network pickles (``network-snapshot-*.pkl``, ``ffhq.pkl``, ...).

An official snapshot is ``pickle.dump(dict(G=..., D=..., G_ema=..., augment_pipe=...,
training_set_kwargs=...))``. Each network is stored by the official "persistence" mechanism as
``_reconstruct_persistent_obj(meta)`` where ``meta`` holds the class name, the full Python source of
the module that defines it (``module_src``), and the object's state (constructor arguments,
parameters, buffers, sub-modules). A plain ``pickle.load`` *executes* ``module_src`` — arbitrary code.

This loader never does. It unpickles with an allow-list (:data:`ALLOWED_GLOBALS`): every global the
file names is looked up there and anything else — ``os.system``, ``builtins.eval``,
``subprocess.Popen``, any unknown class — raises :class:`~multifeat.errors.UnsafePickleError` before
it is called. The persistence hook is replaced by :func:`_reconstruct_persistent` below, which only
reads ``meta`` as data (class name, constructor arguments, tensors) and ignores ``module_src``. The
networks are then rebuilt as this package's modules (:mod:`multifeat.nets.stylegan2`) from the stored
constructor arguments and loaded strictly from the stored tensors. Tensor storages embedded as
``torch.save`` bytes are read with ``torch.load(weights_only=True)``.

Two other network-pickle formats are recognised and refused with their own error (nothing is run;
the file is only parsed with :mod:`pickletools`, which reads opcodes without resolving any global):

* legacy TensorFlow pickles (StyleGAN2 / StyleGAN2-ADA TensorFlow releases: a tuple of
  ``dnnlib.tflib.network.Network``) -> :class:`TensorFlowPickleError`, which says how to convert them
  with the official ``legacy.py --source ... --dest ...``;
* StyleGAN3 pickles (generator classes of ``training.networks_stylegan3``, recognised by the
  ``SynthesisInput`` class they contain) -> :class:`StyleGAN3PickleError`: this package's networks are
  StyleGAN2-ADA's, and the alias-free StyleGAN3 architecture cannot be rebuilt by them.

Usage::

    from multifeat.io.official_pickle import load_official_pickle
    nets = load_official_pickle("ffhq.pkl")
    G = nets["G_ema"]                       # multifeat.nets.stylegan2.Generator, eval mode
    img = G(torch.randn(1, G.z_dim), None, truncation_psi=0.7)   # [1, 3, 1024, 1024], ~[-1, 1]
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import pickletools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from multifeat.errors import CheckpointError, UnsafePickleError
from multifeat.io.network_files import load_state_dict_checked
from multifeat.nets.stylegan2.networks import OFFICIAL_TOP_LEVEL_CLASSES

__all__ = [
    "ALLOWED_GLOBALS",
    "KNOWN_PERSISTENT_CLASSES",
    "OfficialObject",
    "RestrictedUnpickler",
    "StyleGAN3PickleError",
    "TensorFlowPickleError",
    "UnsupportedPickleError",
    "build_augment_pipe",
    "identify_foreign_pickle",
    "load_official_pickle",
    "read_official_pickle",
]

#: Class names the official persistence mechanism may store (``training.networks.*`` and
#: ``training.augment.AugmentPipe``). Any other class name is refused.
KNOWN_PERSISTENT_CLASSES = frozenset(
    {
        "Generator", "MappingNetwork", "SynthesisNetwork", "SynthesisBlock", "SynthesisLayer", "ToRGBLayer",
        "FullyConnectedLayer", "Conv2dLayer", "Discriminator", "DiscriminatorBlock", "DiscriminatorEpilogue",
        "MinibatchStdLayer", "AugmentPipe",
    }
)

_NETWORK_KEYS = ("G", "D", "G_ema")


class UnsupportedPickleError(CheckpointError):
    """A network pickle of a known format that this package does not read (nothing in it was run)."""


class TensorFlowPickleError(UnsupportedPickleError):
    """A legacy TensorFlow network pickle (``dnnlib.tflib.network.Network``); convert it first."""


class StyleGAN3PickleError(UnsupportedPickleError):
    """A StyleGAN3 network pickle (``training.networks_stylegan3``); its architecture is not implemented here."""


#: Strings that mark a StyleGAN3 pickle: its synthesis network's first layer class (stored as the
#: persistent object's class name and defined in the stored module source).
_STYLEGAN3_MARKERS = ("SynthesisInput",)
_TF_MODULE_PREFIX = "dnnlib.tflib"


def identify_foreign_pickle(path: str | os.PathLike) -> str | None:
    """``"tensorflow"``, ``"stylegan3"`` or None: the format of a network pickle this loader refused.

    Parses the opcodes only (``pickletools.genops``: no global is resolved, nothing is called) and
    stops at the first marker: a global of ``dnnlib.tflib`` (legacy TensorFlow networks) or a string
    naming StyleGAN3's ``SynthesisInput``. Unreadable streams give None.
    """
    try:
        with open(path, "rb") as f:
            for _op, arg, _pos in pickletools.genops(f):
                if not isinstance(arg, str):
                    continue
                if arg.startswith(_TF_MODULE_PREFIX):  # GLOBAL "module name", or STACK_GLOBAL's module string
                    return "tensorflow"
                if any(m in arg for m in _STYLEGAN3_MARKERS):
                    return "stylegan3"
    except Exception:  # truncated or not a pickle: no verdict
        return None
    return None


def _foreign_pickle_error(path: Path, kind: str) -> UnsupportedPickleError:
    if kind == "tensorflow":
        return TensorFlowPickleError(
            f"'{path}' is a legacy TensorFlow network pickle (dnnlib.tflib.network.Network objects, from the "
            "StyleGAN2 / StyleGAN2-ADA TensorFlow releases); this loader reads PyTorch StyleGAN2-ADA pickles. "
            "Convert it with the official stylegan2-ada-pytorch repository: "
            f"'python legacy.py --source={path} --dest=converted.pkl', then load converted.pkl. "
            "The conversion uses the official unpickler, which trusts the file: convert only files from a "
            "source you trust. Nothing in this file was run."
        )
    return StyleGAN3PickleError(
        f"'{path}' is a StyleGAN3 network pickle (classes of training.networks_stylegan3, e.g. SynthesisInput): "
        "the alias-free StyleGAN3 generator (Fourier-feature input, filtered non-linearities) is a different "
        "architecture that this package's StyleGAN2-ADA networks cannot rebuild. Use a StyleGAN2-ADA "
        "network pickle (from stylegan2-ada-pytorch) instead. Nothing in this file was run."
    )


@dataclass
class OfficialObject:
    """What an official persistent object holds, as plain data (its module source is dropped unread)."""

    class_name: str
    init_args: tuple = ()
    init_kwargs: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    version: int | None = None


class _EasyDict(dict):
    """Stand-in for the official ``dnnlib.util.EasyDict`` (a dict with attribute access)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e


# ----------------------------------------------------------------------------------------------
# Safe replacements of the globals official pickles reference


def _reconstruct_persistent(meta: Any) -> OfficialObject:
    """Replacement of ``torch_utils.persistence._reconstruct_persistent_obj``: data only, no exec."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise UnsafePickleError(
            "persistent object with unexpected metadata (expected a dict with type='class'); refused"
        )
    class_name = meta.get("class_name")
    if not isinstance(class_name, str) or class_name not in KNOWN_PERSISTENT_CLASSES:
        raise UnsafePickleError(
            f"persistent class {class_name!r} is not a known StyleGAN2-ADA class "
            f"({', '.join(sorted(KNOWN_PERSISTENT_CLASSES))}); refused"
        )
    state = meta.get("state")
    if not isinstance(state, dict):
        raise UnsafePickleError(f"persistent object {class_name!r} has no state dict; refused")
    init_args = state.get("_init_args", ())
    init_kwargs = state.get("_init_kwargs", {})
    if not isinstance(init_args, (tuple, list)) or not isinstance(init_kwargs, dict):
        raise UnsafePickleError(f"persistent object {class_name!r} has malformed constructor arguments; refused")
    version = meta.get("version")
    # meta["module_src"] is deliberately never read.
    return OfficialObject(
        class_name=class_name, init_args=tuple(init_args), init_kwargs=_plain(init_kwargs), state=state,
        version=version if isinstance(version, int) else None,
    )


def _load_storage_from_bytes(data: Any):
    """Replacement of ``torch.storage._load_from_bytes``: the bytes are read weights-only."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError("torch.storage._load_from_bytes called with non-bytes data; refused")
    try:
        obj = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafePickleError(
            f"an embedded tensor storage holds something other than tensor data; refused ({_first_line(e)})"
        ) from e
    if not isinstance(obj, (torch.UntypedStorage, torch.TypedStorage)):
        raise UnsafePickleError(f"an embedded tensor storage holds a {type(obj).__name__}; refused")
    return obj


def _check_tensor_args(storage, size, stride, backward_hooks, what: str) -> None:
    if not isinstance(storage, (torch.UntypedStorage, torch.TypedStorage)):
        raise UnsafePickleError(f"{what}: storage argument is a {type(storage).__name__}; refused")
    for name, seq in (("size", size), ("stride", stride)):
        if not isinstance(seq, (tuple, list, torch.Size)) or not all(isinstance(v, int) for v in seq):
            raise UnsafePickleError(f"{what}: {name} must be a tuple of ints; refused")
    if backward_hooks:
        raise UnsafePickleError(f"{what}: tensors with backward hooks are refused")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    """Checked ``torch._utils._rebuild_tensor_v2``."""
    _check_tensor_args(storage, size, stride, backward_hooks, "torch._utils._rebuild_tensor_v2")
    if not isinstance(storage_offset, int) or not isinstance(requires_grad, bool):
        raise UnsafePickleError("torch._utils._rebuild_tensor_v2: malformed arguments; refused")
    return torch._utils._rebuild_tensor_v2(
        storage, storage_offset, tuple(size), tuple(stride), requires_grad, collections.OrderedDict()
    )


def _rebuild_parameter(data, requires_grad, backward_hooks=None):
    """Checked ``torch._utils._rebuild_parameter``."""
    if not isinstance(data, torch.Tensor) or not isinstance(requires_grad, bool) or backward_hooks:
        raise UnsafePickleError("torch._utils._rebuild_parameter: malformed arguments or hooks; refused")
    return nn.Parameter(data, requires_grad=requires_grad)


def _numpy_dtype(obj: Any, align: bool = False, copy: bool = False) -> np.dtype:
    """``numpy.dtype`` restricted to plain (non-object) dtypes named by a string."""
    if not isinstance(obj, str):
        raise UnsafePickleError(f"numpy.dtype({obj!r}) refused: only dtype names are allowed")
    dt = np.dtype(obj, align=bool(align), copy=bool(copy))
    if dt.hasobject:
        raise UnsafePickleError(f"numpy.dtype({obj!r}) refused: object dtypes can hold code references")
    return dt


def _numpy_scalar(dtype: Any, data: Any = None):
    """``numpy.core.multiarray.scalar`` for plain dtypes: the value is decoded from raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError("numpy scalar with an object dtype or non-bytes payload; refused")
    if len(data) != dtype.itemsize:
        raise UnsafePickleError(f"numpy scalar of {dtype} with {len(data)} bytes; refused")
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


#: ``(module, name)`` -> the callable used instead. Nothing outside this table can be reached.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("dnnlib.util", "EasyDict"): _EasyDict,  # nested kwargs of real training runs
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves globals only through :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"the pickle references '{module}.{name}', which is not on the allow-list of official "
                "StyleGAN2-ADA pickles; refused before anything was executed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("the pickle uses persistent ids (not an official network pickle); refused")


# ----------------------------------------------------------------------------------------------
# Rebuilding


def _plain(obj: Any) -> Any:
    """EasyDicts -> dicts, numpy scalars -> Python numbers, recursively (constructor arguments)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _collect_state(obj: OfficialObject, prefix: str, out: dict[str, torch.Tensor], where: str) -> None:
    state = obj.state
    params = state.get("_parameters", {}) or {}
    buffers = state.get("_buffers", {}) or {}
    non_persistent = state.get("_non_persistent_buffers_set", set()) or set()
    modules = state.get("_modules", {}) or {}
    for name, t in list(params.items()) + [(k, v) for k, v in buffers.items() if k not in non_persistent]:
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{where}: '{prefix}{name}' is a {type(t).__name__}, expected a tensor")
        out[prefix + name] = t.detach()
    for name, sub in modules.items():
        if sub is None:
            continue
        if not isinstance(sub, OfficialObject):
            raise CheckpointError(f"{where}: sub-module '{prefix}{name}' is a {type(sub).__name__}")
        _collect_state(sub, f"{prefix}{name}.", out, where)


def _build_network(obj: OfficialObject, where: str) -> nn.Module:
    cls = OFFICIAL_TOP_LEVEL_CLASSES.get(obj.class_name)
    if cls is None:
        raise CheckpointError(
            f"{where} is a {obj.class_name}; expected one of {', '.join(OFFICIAL_TOP_LEVEL_CLASSES)}"
        )
    try:
        module = cls(*obj.init_args, **obj.init_kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"{where}: cannot build a StyleGAN2-ADA {obj.class_name} from the stored arguments "
            f"{obj.init_kwargs!r} ({_first_line(e)}); is this a StyleGAN2-ADA (not StyleGAN3) pickle?"
        ) from e
    state_dict: dict[str, torch.Tensor] = {}
    _collect_state(obj, "", state_dict, where)
    load_state_dict_checked(module, state_dict, where)
    return module.eval().requires_grad_(False)


def read_official_pickle(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` with the allow-list; networks come back as :class:`OfficialObject` records."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"network pickle '{p}' does not exist")
    if p.is_dir():
        raise CheckpointError(f"network pickle path '{p}' is a folder; expected a .pkl file")
    try:
        with open(p, "rb") as f:
            return RestrictedUnpickler(f).load()
    except UnsafePickleError as e:
        kind = identify_foreign_pickle(p)
        if kind is not None:
            raise _foreign_pickle_error(p, kind) from None
        raise UnsafePickleError(f"'{p}': {e}") from None
    except CheckpointError:
        raise
    except OSError as e:
        raise CheckpointError(f"cannot read network pickle '{p}': {e.strerror or e}") from e
    except Exception as e:  # truncated or corrupt stream
        raise CheckpointError(f"'{p}' is not a readable network pickle ({_first_line(e)})") from e


def build_augment_pipe(info: dict | None):
    """Build ``multifeat.nets.stylegan2.augment.AugmentPipe`` from ``load_official_pickle(...)['augment_pipe']``.

    Returns None for None. Raises ``CheckpointError`` if the stored pipe uses options this
    package's pipe lacks (e.g. a non-zero ``imgfilter``).
    """
    if info is None:
        return None
    from multifeat.nets.stylegan2.augment import AugmentPipe

    kwargs = dict(info["init_kwargs"])
    unsupported = {k for k in ("imgfilter", "imgfilter_bands", "imgfilter_std") if k in kwargs}
    for k in unsupported:
        v = kwargs.pop(k)
        if k == "imgfilter" and v:
            raise CheckpointError(f"the stored augmentation pipe uses imgfilter={v}, which is not implemented")
    try:
        return AugmentPipe(**kwargs, p=float(info.get("p", 0.0)))
    except TypeError as e:
        raise CheckpointError(f"cannot build the augmentation pipe from {kwargs!r} ({_first_line(e)})") from e


def load_official_pickle(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load an official StyleGAN2-ADA pickle without executing anything it contains.

    Returns a dict with the same keys as the file: ``G``, ``D``, ``G_ema`` as
    :class:`multifeat.nets.stylegan2.Generator` / ``Discriminator`` (eval mode, gradients off, on
    ``device``), ``augment_pipe`` as ``{"class_name", "init_kwargs", "p"}`` (or None; build it with
    :func:`build_augment_pipe`), and other entries (``training_set_kwargs``, ...) as plain data.

    Raises:
        TensorFlowPickleError: a legacy TensorFlow pickle (the message says how to convert it).
        StyleGAN3PickleError: a StyleGAN3 pickle (another architecture).
        UnsafePickleError: the file references a global or class outside the allow-list.
        CheckpointError: missing/unreadable file, or networks that do not match their arguments.
    """
    raw = read_official_pickle(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"'{path}' holds a {type(raw).__name__}; expected a dict with G, D, G_ema")
    if not any(isinstance(raw.get(k), OfficialObject) for k in _NETWORK_KEYS):
        raise CheckpointError(f"'{path}' holds no network under {', '.join(_NETWORK_KEYS)}; keys: {sorted(raw)}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _NETWORK_KEYS and value is not None:
            if not isinstance(value, OfficialObject):
                raise CheckpointError(f"'{path}': entry '{key}' is a {type(value).__name__}, expected a network")
            out[key] = _build_network(value, f"'{path}' entry '{key}'").to(device)
        elif isinstance(value, OfficialObject):
            if value.class_name != "AugmentPipe":
                raise CheckpointError(f"'{path}': entry '{key}' is an unexpected {value.class_name}")
            p = value.state.get("_buffers", {}).get("p")
            out[key] = {
                "class_name": value.class_name,
                "init_kwargs": dict(value.init_kwargs),
                "p": float(p) if isinstance(p, torch.Tensor) else 0.0,
            }
        else:
            out[key] = _plain(value)
    return out
