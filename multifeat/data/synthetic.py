"""SyntheticFaces: procedurally drawn faces whose binary attributes are exact by construction.

Item ``i`` of a dataset is a pure function of ``(seed, i)`` and the configuration: a NumPy
generator seeded with ``[seed, i]`` draws one vector of uniforms, from which the attributes and
every nuisance parameter (skin tone, hair colour and style, background gradient, face size,
position, rotation, lighting, glasses frame colour, ...) are derived. See
:mod:`multifeat.data.synthetic_render` for how the faces are drawn.

Attribute distribution (applied per item, so filters keep the dataset deterministic):

- ``attribute_probs``: probability of each attribute (default 0.5 each), independent.
- ``joint_fraction``: if set, the fraction of the dataset that is both bald and bearded (0.0: none,
  1.0: all); the other (bald, beard) combinations share the rest in proportion to their
  independent probabilities.
- ``require``: ``{"bald": True, "beard": False}``; attributes are drawn from the distribution
  conditioned on the filter, so every item matches. ``joint_fraction`` applies *after* filtering
  (``require={"beard": True}, joint_fraction=0.05``: 5 % of the bearded faces are also bald).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from multifeat.data.common import ATTRIBUTES, check_power_of_two, parse_require
from multifeat.data.synthetic_render import (
    NUM_PARAMS,
    PARAM_OFFSETS,
    render_faces,
    stack_params,
    unpack_params,
)
from multifeat.errors import ConfigError

_N_UNIFORMS = 64

_SKIN_STOPS = np.array([[0.97, 0.84, 0.73], [0.86, 0.66, 0.52], [0.66, 0.45, 0.31], [0.42, 0.27, 0.18]], np.float32)
_HAIR = np.array([
    [0.07, 0.06, 0.06],  # black
    [0.22, 0.13, 0.08],  # dark brown
    [0.42, 0.27, 0.15],  # brown
    [0.86, 0.72, 0.42],  # blond
    [0.58, 0.22, 0.09],  # red
    [0.62, 0.62, 0.64],  # grey
    [0.92, 0.91, 0.88],  # white
], np.float32)
_FRAME_DARK = np.array([[0.05, 0.05, 0.06], [0.25, 0.12, 0.05], [0.06, 0.09, 0.3], [0.35, 0.04, 0.06]], np.float32)
_FRAME_LIGHT = np.array([[0.85, 0.85, 0.88], [0.9, 0.75, 0.3], [0.97, 0.97, 0.97], [0.6, 0.85, 0.95]], np.float32)
_IRIS = np.array([[0.25, 0.14, 0.07], [0.18, 0.35, 0.6], [0.22, 0.4, 0.2], [0.08, 0.06, 0.05]], np.float32)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _pick(palette: np.ndarray, u: float) -> np.ndarray:
    return palette[min(int(u * len(palette)), len(palette) - 1)]


def _attribute_table(probs: dict[str, float], joint_fraction: float | None, require: dict[str, bool]):
    """Return ((bald, beard) cells, their probabilities) and the per-attribute probabilities of the rest.

    Raises :class:`ConfigError` if the configuration admits no image.
    """
    pb, pd = probs["bald"], probs["beard"]
    cells = [(0, 0), (0, 1), (1, 0), (1, 1)]
    w = np.array([(1 - pb) * (1 - pd), (1 - pb) * pd, pb * (1 - pd), pb * pd], np.float64)
    allowed = np.array([all(require.get(k, bool(c[j])) == bool(c[j]) for j, k in enumerate(("bald", "beard"))) for c in cells])
    w = np.where(allowed, w, 0.0)
    if joint_fraction is not None:
        jf = float(joint_fraction)
        others = w[:3].sum()
        if jf > 0 and not allowed[3]:
            raise ConfigError(f"joint_fraction={jf} asks for bald+beard images but require={require} excludes them")
        if jf < 1 and others <= 0:
            raise ConfigError(
                f"joint_fraction={jf} leaves {1 - jf:.3g} of the images for other (bald, beard) combinations, "
                f"but attribute_probs={probs} and require={require} allow none")
        w = np.concatenate([w[:3] / others * (1 - jf) if others > 0 else np.zeros(3), [jf]])
    total = w.sum()
    if total <= 0:
        raise ConfigError(f"no synthetic face can satisfy require={require} with attribute_probs={probs}")
    w = w / total
    rest = {}
    for name in ATTRIBUTES[2:]:
        p = probs[name]
        if name in require:
            if (require[name] and p <= 0) or (not require[name] and p >= 1):
                raise ConfigError(f"require['{name}']={require[name]} is impossible with attribute_probs['{name}']={p}")
            p = 1.0 if require[name] else 0.0
        rest[name] = p
    return cells, np.cumsum(w), rest


class SyntheticFaces(Dataset):
    """Procedural faces with exact attributes ``bald, beard, eyeglasses, smiling``.

    Args:
        num_samples: dataset length (default 4096).
        image_size: S, a power of two in [16, 256] (default 64).
        seed: dataset seed; item ``i`` depends only on ``(seed, i)`` and the configuration.
        attribute_probs: per-attribute probabilities, default 0.5 each (missing keys keep 0.5).
        joint_fraction: fraction of (filtered) items that are both bald and bearded; ``None``:
            independent attributes.
        require: filter ``{name: bool}``; every item satisfies it.
        cache: keep rendered images (uint8) in memory after first use (per process / worker).

    Items: ``{"image": float32 [3, S, S] in [-1, 1], "attrs": float32 [4] 0/1 in ATTRIBUTES order,
    "index": int}``. Images are quantised to 8 bits like real photos, so cached and fresh renders
    are identical. ``__getitems__`` renders a whole batch vectorised (used by ``DataLoader``).
    """

    attribute_names = ATTRIBUTES

    def __init__(
        self,
        num_samples: int = 4096,
        image_size: int = 64,
        seed: int = 0,
        attribute_probs: Mapping[str, float] | None = None,
        joint_fraction: float | None = None,
        require: Mapping[str, object] | None = None,
        cache: bool = False,
    ) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0:
            raise ConfigError(f"num_samples must be a positive integer, got {num_samples!r}")
        self.num_samples = num_samples
        self.image_size = check_power_of_two(image_size, "image_size", 16, 256)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = seed
        probs = {name: 0.5 for name in ATTRIBUTES}
        for name, p in (attribute_probs or {}).items():
            if name not in ATTRIBUTES:
                raise ConfigError(f"attribute_probs: unknown attribute '{name}'; valid names: {', '.join(ATTRIBUTES)}")
            if not isinstance(p, int | float) or isinstance(p, bool) or not 0.0 <= float(p) <= 1.0:
                raise ConfigError(f"attribute_probs['{name}'] must be a probability in [0, 1], got {p!r}")
            probs[name] = float(p)
        if joint_fraction is not None and (isinstance(joint_fraction, bool) or not isinstance(joint_fraction, int | float)
                                           or not 0.0 <= float(joint_fraction) <= 1.0):
            raise ConfigError(f"joint_fraction must be in [0, 1] or None, got {joint_fraction!r}")
        self.attribute_probs = probs
        self.joint_fraction = None if joint_fraction is None else float(joint_fraction)
        self.require = parse_require(require, ATTRIBUTES)
        self._cells, self._cell_cdf, self._rest = _attribute_table(probs, self.joint_fraction, self.require)
        self.cache = bool(cache)
        self._cache: torch.Tensor | None = None
        self._cached: np.ndarray | None = None

    def __len__(self) -> int:
        return self.num_samples

    def _check_index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self.num_samples
        if not 0 <= i < self.num_samples:
            raise IndexError(f"index {index} out of range for SyntheticFaces of length {self.num_samples}")
        return i

    def _uniforms(self, i: int) -> np.ndarray:
        return np.random.default_rng([self.seed, i]).random(_N_UNIFORMS)

    def _draw_attrs(self, r: np.ndarray) -> np.ndarray:
        cell = self._cells[min(int(np.searchsorted(self._cell_cdf, r[0], side="right")), 3)]
        a = np.array([cell[0], cell[1], r[1] < self._rest["eyeglasses"], r[2] < self._rest["smiling"]], np.float32)
        return a

    def attributes(self, index: int) -> np.ndarray:
        """Attributes of item ``index`` as float32 [4] (0/1), without rendering it."""
        return self._draw_attrs(self._uniforms(self._check_index(index)))

    def params(self, index: int) -> dict[str, np.ndarray]:
        """All drawing parameters of item ``index`` (editable; render with :meth:`render_params`)."""
        r = self._uniforms(self._check_index(index))
        return {k: v.copy() for k, v in unpack_params(_face_params(r, self._draw_attrs(r))).items()}

    def render_params(self, params: list[dict[str, np.ndarray]], with_masks: bool = False):
        """Render parameter dicts at this dataset's size: float32 [N,3,S,S] in [-1,1] (8-bit quantised),
        plus coverage masks ``{name: [N,S,S]}`` if ``with_masks``."""
        out = render_faces(stack_params(params), self.image_size, with_masks=with_masks)
        rgb, masks = out if with_masks else (out, None)
        images = torch.from_numpy(_quantise(rgb)).float().div_(127.5).sub_(1.0)
        return (images, {k: torch.from_numpy(m) for k, m in masks.items()}) if with_masks else images

    def masks(self, index: int) -> dict[str, torch.Tensor]:
        """Per-layer coverage masks [S,S] of item ``index`` (face, scalp, hair, shine, beard, glasses, mouth)."""
        _, m = self.render_params([self.params(index)], with_masks=True)
        return {k: v[0] for k, v in m.items()}

    def _render_uint8(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        attrs, params = [], []
        for i in indices:
            r = self._uniforms(i)
            a = self._draw_attrs(r)
            attrs.append(a)
            params.append(_face_params(r, a))
        packed = np.stack(params)
        step = 4  # small chunks keep the working set in cache (faster than one big batch)
        images = np.concatenate([render_faces(packed[k : k + step], self.image_size) for k in range(0, len(packed), step)])
        return _quantise(images), np.stack(attrs)

    def __getitems__(self, indices: list[int]) -> list[dict]:
        idx = [self._check_index(i) for i in indices]
        if not self.cache:
            images, attrs = self._render_uint8(idx)
        else:
            if self._cache is None:
                s = self.image_size
                self._cache = torch.zeros((self.num_samples, 3, s, s), dtype=torch.uint8)
                self._cache_attrs = np.zeros((self.num_samples, len(ATTRIBUTES)), dtype=np.float32)
                self._cached = np.zeros(self.num_samples, dtype=bool)
            missing = sorted({i for i in idx if not self._cached[i]})
            if missing:
                imgs, new_attrs = self._render_uint8(missing)
                self._cache[missing] = torch.from_numpy(imgs)
                self._cache_attrs[missing] = new_attrs
                self._cached[missing] = True
            images = self._cache[idx].numpy()
            attrs = self._cache_attrs[idx]
        img_t = torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)
        attr_t = torch.from_numpy(attrs)
        return [{"image": img_t[k], "attrs": attr_t[k], "index": i} for k, i in enumerate(idx)]

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __repr__(self) -> str:
        return (f"SyntheticFaces(num_samples={self.num_samples}, image_size={self.image_size}, seed={self.seed}, "
                f"attribute_probs={self.attribute_probs}, joint_fraction={self.joint_fraction}, require={self.require})")


def _quantise(rgb: np.ndarray) -> np.ndarray:
    """[0,1] float -> uint8, round half up."""
    return (rgb * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


# scalar nuisances: name -> (uniform slot, low, high), drawn uniformly in [low, high]
_SCALARS = {
    "cx": (23, -0.08, 0.08), "cy": (24, 0.0, 0.12), "scale": (25, 0.44, 0.54),
    "hairline": (27, -0.75, -0.5), "hair_volume": (28, 0.05, 0.25), "hair_bottom": (29, -0.2, 1.0),
    "hair_wave_amp": (30, 0.0, 0.05), "hair_wave_freq": (31, 1.0, 3.0), "hair_wave_phase": (32, 0.0, 1.0),
    "beard_top": (33, 0.22, 0.36), "beard_width": (34, 0.65, 1.05),
    "eye_dx": (35, 0.34, 0.42), "eye_y": (36, -0.12, 0.0), "brow_dy": (37, -0.03, 0.05),
    "mouth_y": (38, 0.52, 0.6), "mouth_w": (39, 0.32, 0.42), "smile_depth": (40, 0.2, 0.28),
    "neutral_curve": (41, -0.04, 0.04), "glass_r": (42, 0.2, 0.26), "brightness": (44, 0.85, 1.08),
}
_SC_DEST = np.array([PARAM_OFFSETS[k].start for k in _SCALARS])
_SC_SLOT = np.array([v[0] for v in _SCALARS.values()])
_SC_LO = np.array([v[1] for v in _SCALARS.values()])
_SC_SPAN = np.array([v[2] - v[1] for v in _SCALARS.values()])
_LIPS = np.array([0.32, 0.06, 0.08])


def _face_params(r: np.ndarray, attrs: np.ndarray) -> np.ndarray:
    """Map one vector of uniforms (and the drawn attributes) to the drawing parameters.

    Returns the packed float32 vector (see :func:`~multifeat.data.synthetic_render.pack_params`).
    Slots 0-2 decide the attributes (see ``_draw_attrs``); the rest are nuisances. Transcendental
    functions act only here, per face, so batched rendering matches single renders exactly.
    """
    out = np.empty(NUM_PARAMS, np.float64)
    o = PARAM_OFFSETS
    out[_SC_DEST] = _SC_LO + _SC_SPAN * r[_SC_SLOT]
    out[o["bald"].start], out[o["beard"].start] = attrs[0], attrs[1]
    out[o["eyeglasses"].start], out[o["smiling"].start] = attrs[2], attrs[3]
    # skin: piecewise-linear ramp from light to dark, plus small per-channel jitter
    t = r[3] * (len(_SKIN_STOPS) - 1)
    k = min(int(t), len(_SKIN_STOPS) - 2)
    skin = np.clip(_SKIN_STOPS[k] + (_SKIN_STOPS[k + 1] - _SKIN_STOPS[k]) * (t - k) + (r[4:7] - 0.5) * 0.06, 0, 1)
    skin_l = float(skin @ _LUMA)
    out[o["skin"]] = skin
    # hair: a palette colour (brightness-jittered) whose luminance differs from the skin's by >= 0.25;
    # walk the palette from the drawn colour, or take the most different one if none qualifies
    start = min(int(r[7] * len(_HAIR)), len(_HAIR) - 1)
    cands = np.clip(np.roll(_HAIR, -start, axis=0) * (0.9 + 0.2 * r[8]), 0, 1)
    diffs = np.abs(cands @ _LUMA - skin_l)
    ok = np.flatnonzero(diffs >= 0.25)
    out[o["hair"]] = cands[ok[0] if len(ok) else int(np.argmax(diffs))]
    out[o["frame"]] = _pick(_FRAME_DARK if skin_l > 0.5 else _FRAME_LIGHT, r[9])
    # background: two colours, gradient direction; shirt, iris, lips
    bg0 = 0.1 + 0.85 * r[10:13]
    out[o["bg0"]] = bg0
    out[o["bg1"]] = np.clip(bg0 + (r[13:16] - 0.5) * 0.6, 0, 1)
    ang = 2 * math.pi * r[16]
    out[o["bg_dir"]] = (math.cos(ang), math.sin(ang))
    out[o["shirt"]] = 0.1 + 0.8 * r[17:20]
    out[o["iris"]] = _pick(_IRIS, r[26])
    out[o["lips"]] = np.clip(skin * 0.55 + _LIPS * (0.8 + 0.4 * r[22]), 0, 1)
    # pose and light
    theta = (r[20] - 0.5) * 0.3  # +-8.6 degrees
    out[o["cos"]], out[o["sin"]] = math.cos(theta), math.sin(theta)
    la = 2 * math.pi * r[21]
    out[o["light"]] = (math.cos(la) * r[43], math.sin(la) * r[43])
    return out.astype(np.float32)
