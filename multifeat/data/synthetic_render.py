"""Analytic, anti-aliased renderer of the synthetic faces.

Every part of a face is a shape with an (approximate) signed distance ``d`` in *face-local units*
(the face ellipse has half-width 1 and half-height 1.25; ``v`` points down). A shape's coverage of
a pixel is ``clip(0.5 - d / pixel_width, 0, 1)``, which gives smooth, resolution-independent
edges without supersampling. Layers are alpha-composited back to front.

The renderer is vectorised over a batch of faces: parameters are float32 arrays of shape ``[N]``
(see :data:`PARAM_SHAPES`), the working grid is ``[N, S, S]``. Only +, -, *, /, sqrt, min, max,
abs and floor act on pixels, all exactly rounded in IEEE arithmetic, so a face renders to the same
bytes alone or inside any batch.

Layers (back to front): background gradient, shirt, neck, back hair, ears, face, scalp shine
(bald only), nose, fringe hair, beard, eyebrows, eyes, mouth, glasses. The attributes:

- ``bald``: no hair layer at all. Not bald: the fringe covers the whole face above ``v = -0.8``
  (the *scalp* region) and back hair frames the head.
- ``beard``: hair-coloured region on jaw and chin below ``v ≈ 0.2-0.36``, a hole around the lips.
- ``eyeglasses``: two lens rings around the eyes, a bridge, temples towards the ears, a lens tint.
- ``smiling``: an open crescent mouth whose corners sit above its centre; otherwise a flat line.
"""

from __future__ import annotations

import numpy as np

# name -> number of components; every parameter is a float32 array [N] or [N, k].
PARAM_SHAPES: dict[str, int] = {
    "bald": 1, "beard": 1, "eyeglasses": 1, "smiling": 1,
    "bg0": 3, "bg1": 3, "bg_dir": 2,
    "cx": 1, "cy": 1, "scale": 1, "cos": 1, "sin": 1,
    "skin": 3, "hair": 3, "frame": 3, "shirt": 3, "iris": 3, "lips": 3,
    "hairline": 1, "hair_volume": 1, "hair_bottom": 1, "hair_wave_amp": 1, "hair_wave_freq": 1, "hair_wave_phase": 1,
    "beard_top": 1, "beard_width": 1,
    "eye_dx": 1, "eye_y": 1, "brow_dy": 1,
    "mouth_y": 1, "mouth_w": 1, "smile_depth": 1, "neutral_curve": 1,
    "glass_r": 1, "light": 2, "brightness": 1,
}

#: the *scalp* region, used by the label tests: inside the face ellipse and above this ``v``.
SCALP_V = -0.85
MASK_NAMES = ("face", "scalp", "hair", "shine", "beard", "glasses", "mouth")


PARAM_OFFSETS: dict[str, slice] = {}
_o = 0
for _k, _n in PARAM_SHAPES.items():
    PARAM_OFFSETS[_k] = slice(_o, _o + _n)
    _o += _n
#: length of a packed parameter vector
NUM_PARAMS = _o


def pack_params(params: dict[str, np.ndarray]) -> np.ndarray:
    """One face's parameter dict -> a float32 vector [NUM_PARAMS]."""
    return np.concatenate([np.asarray(params[k], dtype=np.float32).reshape(n) for k, n in PARAM_SHAPES.items()])


def unpack_params(packed: np.ndarray) -> dict[str, np.ndarray]:
    """Packed parameters [..., NUM_PARAMS] -> dict of views [..., k]."""
    return {k: packed[..., sl] for k, sl in PARAM_OFFSETS.items()}


def stack_params(items: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Per-face parameter dicts -> a packed batch float32 [N, NUM_PARAMS]."""
    return np.stack([pack_params(it) for it in items])


def _cov(d: np.ndarray, pw: np.ndarray) -> np.ndarray:
    """Coverage of a pixel by the shape ``d <= 0`` (anti-aliased over one pixel width)."""
    return np.clip(0.5 - d / pw, 0.0, 1.0)


def _ellipse(u, v, cu, cv, ru, rv):
    """Approximate signed distance to an axis-aligned ellipse (gradient-normalised, exact on the edge)."""
    px, py = (u - cu) / ru, (v - cv) / rv
    k = np.sqrt(px * px + py * py)
    g = np.sqrt(px * px / (ru * ru) + py * py / (rv * rv))
    return (k - 1.0) * k / np.maximum(g, 1e-6)


def _circle(u, v, cu, cv, r):
    du, dv = u - cu, v - cv
    return np.sqrt(du * du + dv * dv) - r


def _tri(x):
    """Triangle wave in [-1, 1] with period 1 (no transcendental functions, see module doc)."""
    f = x - np.floor(x)
    return np.abs(f - 0.5) * 4.0 - 1.0


def _over(img, col, a):
    """Composite colour ``col`` ([N,3,1,1] or [N,3,S,S]) with coverage ``a`` [N,S,S] over ``img``."""
    img += (col - img) * a[:, None]


def render_faces(params: dict[str, np.ndarray], size: int, with_masks: bool = False):
    """Render a batch of faces.

    Args:
        params: packed batch float32 [N, NUM_PARAMS] (:func:`stack_params`), or a dict of [N, k] arrays.
        size: output resolution S (pixels per side).
        with_masks: also return per-layer coverages.

    Returns:
        ``rgb`` float32 [N, 3, S, S] in [0, 1] (not yet quantised), and if ``with_masks`` a dict of
        float32 [N, S, S] coverages in [0, 1] keyed by :data:`MASK_NAMES` (a layer's own coverage,
        before later layers occlude it; ``scalp`` and ``face`` are regions, drawn or not).
    """
    if not isinstance(params, dict):
        params = unpack_params(np.asarray(params, dtype=np.float32))
    p = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
    n = p["cx"].shape[0]

    def s1(name):  # scalar parameter -> [N,1,1]
        return p[name].reshape(n, 1, 1)

    def c3(name):  # colour parameter -> [N,3,1,1]
        return p[name].reshape(n, 3, 1, 1)

    step = np.float32(2.0 / size)
    coords = (np.arange(size, dtype=np.float32) + np.float32(0.5)) * step - np.float32(1.0)
    x = coords.reshape(1, 1, size)
    y = coords.reshape(1, size, 1)
    scale = s1("scale")
    cos, sin, cx, cy = s1("cos"), s1("sin"), s1("cx"), s1("cy")
    pw = step / scale  # one pixel in face-local units, [N,1,1]

    def window(u0, u1, v0, v1):
        """Slices of the face-local box [u0,u1]x[v0,v1] (all faces), the local coordinates u, v, |u|
        there [N,h,w], and a view of the image [N,3,h,w]."""
        ys, xs = _window(p, n, size, u0, u1, v0, v1)
        dx, dy = x[:, :, xs] - cx, y[:, ys, :] - cy
        u = (dx * cos + dy * sin) / scale
        v = (dy * cos - dx * sin) / scale
        return ys, xs, u, v, np.abs(u), img[:, :, ys, xs]

    # background: linear gradient between two colours along a random direction
    bd = p["bg_dir"].reshape(n, 2, 1, 1)
    t = (x * bd[:, 0] + y * bd[:, 1]) * np.float32(0.5) + np.float32(0.5)
    img = np.empty((n, 3, size, size), dtype=np.float32)
    img[...] = c3("bg0") + (c3("bg1") - c3("bg0")) * t[:, None]

    skin = c3("skin")
    hair = c3("hair")
    bald = s1("bald") > 0.5
    has_beard = s1("beard") > 0.5
    glasses = s1("eyeglasses") > 0.5
    smiling = s1("smiling") > 0.5
    zero = np.zeros((n, size, size), np.float32)
    masks = {}
    lt = p["light"].reshape(n, 2, 1, 1)
    ex, ey = s1("eye_dx"), s1("eye_y")
    my, mw = s1("mouth_y"), s1("mouth_w")
    depth = s1("smile_depth")
    thin = np.maximum(np.float32(0.045), np.float32(0.45) * pw)

    # shirt and neck
    _, _, u, v, au, im = window(-1.95, 1.95, 0.65, 3.4)
    _over(im, c3("shirt"), _cov(_ellipse(u, v, 0.0, 2.35, 1.9, 0.95), pw))
    _over(im, skin * np.float32(0.82), _cov(np.maximum(au - 0.42, np.abs(v - 1.6) - 0.9), pw))

    # the head: back hair, ears, face, scalp shine, fringe
    hy, hx, u, v, au, im = window(-1.45, 1.45, -1.75, 1.45)
    hair_back = fringe = shine = None
    if not bald.all():  # back hair: a cap larger than the head, cut off at hair_bottom
        vol = s1("hair_volume")
        back_d = np.maximum(_ellipse(u, v, 0.0, -0.1, 1.08 + vol, 1.3 + vol), v - s1("hair_bottom"))
        hair_back = np.where(bald, np.float32(0.0), _cov(back_d, pw))
        _over(im, hair * np.float32(0.85), hair_back)
    _over(im, skin * np.float32(0.9), _cov(_ellipse(au, v, 1.0, 0.05, 0.16, 0.26), pw))  # ears (symmetric in u)
    face = _cov(_ellipse(u, v, 0.0, 0.0, 1.0, 1.25), pw)
    r2 = u * u + v * v * np.float32(0.64)
    _over(im, skin * (np.float32(1.0) - np.float32(0.13) * r2)[:, None], face)  # radial shading
    if bald.any():  # a soft highlight on a bald scalp
        shine_d = _ellipse(u, v, -0.3 * lt[:, 0], -0.85, 0.38, 0.2)
        shine = np.where(bald, np.float32(0.35) * _cov(shine_d, pw) * face, np.float32(0.0))
        _over(im, np.float32(1.0), shine)
    if not bald.all():  # fringe: the face above a wavy hairline that drops towards the temples
        hl = (s1("hairline") + s1("hair_wave_amp") * _tri(u * s1("hair_wave_freq") + s1("hair_wave_phase"))
              + np.float32(0.45) * np.maximum(au - 0.6, 0.0))
        fringe_d = np.maximum(_ellipse(u, v, 0.0, 0.0, 1.02, 1.27), v - hl)
        fringe = np.where(bald, np.float32(0.0), _cov(fringe_d, pw))
        _over(im, hair, fringe)
    if with_masks:
        masks["face"] = _embed(zero, face, hy, hx)
        masks["scalp"] = _embed(zero, face * _cov(v - np.float32(SCALP_V), pw), hy, hx)
        masks["hair"] = _embed(zero, hair_back if fringe is None else np.maximum(hair_back, fringe), hy, hx)
        masks["shine"] = _embed(zero, shine, hy, hx)

    # beard: jaw and chin below a line that rises into sideburns, minus a hole around the lips
    beard = None
    if has_beard.any():
        by_, bx_, u, v, au, im = window(-1.12, 1.12, -0.2, 1.38)
        hole_cv = my + np.where(smiling, depth * np.float32(0.45), np.float32(0.0))
        hole_rv = np.float32(0.1) + np.where(smiling, depth * np.float32(0.55), np.float32(0.0))
        hole_d = _ellipse(u, v, 0.0, hole_cv, mw + 0.07, hole_rv)
        beard_line = s1("beard_top") - np.float32(0.6) * np.maximum(au - 0.55, 0.0)
        beard_d = np.maximum(np.maximum(_ellipse(u, v, 0.0, 0.03, 1.04, 1.3), beard_line - v),
                             np.maximum(au - s1("beard_width"), -hole_d))
        beard = np.where(has_beard, _cov(beard_d, pw), np.float32(0.0))
        _over(im, hair * np.float32(0.9), beard)
        if with_masks:
            masks["beard"] = _embed(zero, beard, by_, bx_)

    # nose and mouth: smiling = crescent with raised corners (dark inside, teeth on top); neutral = a line
    my_, mx_, u, v, au, im = window(-0.5, 0.5, 0.08, 1.0)
    _over(im, skin * np.float32(0.72), _cov(_ellipse(u, v, 0.0, 0.2, 0.08, 0.05), pw))
    if smiling.any():
        q = np.float32(1.0) - (u / mw) * (u / mw)
        c0 = my - np.float32(0.05)
        v_top = c0 + np.float32(0.25) * depth * q - thin
        v_bot = c0 + depth * q + thin
        smile_d = np.maximum(np.maximum(v_top - v, v - v_bot), au - mw)
        teeth_d = np.maximum(np.maximum(v_top + thin - v, v - (v_top + thin + np.float32(0.3) * (v_bot - v_top))),
                             au - np.float32(0.75) * mw)
    if not smiling.all():
        line_d = np.maximum(np.abs(v - (my + s1("neutral_curve") * (np.float32(1.0) - (u / mw) * (u / mw)))) - thin,
                            au - np.float32(0.85) * mw)
    mouth_d = smile_d if smiling.all() else line_d if not smiling.any() else np.where(smiling, smile_d, line_d)
    mouth = _cov(mouth_d, pw)
    mouth_col = np.where(smiling.reshape(n, 1, 1, 1), c3("lips") * np.float32(0.45), c3("lips"))
    _over(im, mouth_col, mouth)
    if smiling.any():
        _over(im, np.float32(0.95), np.where(smiling, _cov(teeth_d, pw), np.float32(0.0)) * mouth)
    if with_masks:
        masks["mouth"] = _embed(zero, mouth, my_, mx_)

    # eyebrows, eyes (white + iris) and glasses (lens tint, rings, bridge, temples); symmetric in u
    ey_, ex_, u, v, au, im = window(-1.12, 1.12, -0.62, 0.34)
    by = ey - np.float32(0.22) - s1("brow_dy")
    _over(im, hair * np.float32(0.75), _cov(_ellipse(au, v, ex, by, 0.18, thin), pw))
    _over(im, np.float32(0.96), _cov(_ellipse(au, v, ex, ey, 0.16, 0.09), pw))
    iris_r = np.maximum(np.float32(0.075), np.float32(0.5) * pw)
    _over(im, c3("iris"), _cov(_circle(au, v, ex, ey, iris_r), pw))
    glass = None
    if glasses.any():
        gr = s1("glass_r")
        ft = np.maximum(np.float32(0.04), np.float32(0.42) * pw)
        lens = _circle(au, v, ex, ey, gr)
        tint = np.float32(0.22) * _cov(lens, pw)
        ring_d = np.abs(lens) - ft
        bridge_d = np.maximum(np.abs(v - (ey - np.float32(0.03))) - ft, au - (ex - gr + ft))
        temple_d = np.maximum(np.maximum(np.abs(v - ey) - ft * np.float32(0.8), (ex + gr) - au), au - np.float32(1.0))
        frame = _cov(np.minimum(np.minimum(ring_d, bridge_d), temple_d), pw)
        tint = np.where(glasses, tint, np.float32(0.0))
        frame = np.where(glasses, frame, np.float32(0.0))
        _over(im, np.float32(0.9), tint)
        _over(im, c3("frame"), frame)
        glass = np.maximum(tint, frame)
    if with_masks:
        masks["glasses"] = _embed(zero, glass, ey_, ex_)
        masks.setdefault("beard", zero.copy())

    # lighting: a soft directional gradient and a global brightness
    light = s1("brightness") * (np.float32(1.0) + np.float32(0.12) * (lt[:, 0] * x + lt[:, 1] * y))
    img *= light[:, None]
    np.clip(img, 0.0, 1.0, out=img)
    return (img, {k: masks[k] for k in MASK_NAMES}) if with_masks else img


def _window(p: dict[str, np.ndarray], n: int, size: int, u0: float, u1: float, v0: float, v1: float):
    """Pixel slices (rows, cols) covering the face-local box [u0,u1] x [v0,v1] of every face in the batch."""
    us = np.array([u0, u1, u1, u0], np.float32).reshape(1, 4)
    vs = np.array([v0, v0, v1, v1], np.float32).reshape(1, 4)
    s, c, si = p["scale"].reshape(n, 1), p["cos"].reshape(n, 1), p["sin"].reshape(n, 1)
    xs = p["cx"].reshape(n, 1) + s * (us * c - vs * si)
    ys = p["cy"].reshape(n, 1) + s * (us * si + vs * c)
    def to_px(lo, hi):
        a = max(0, int(np.floor((lo + 1.0) * size / 2.0)) - 1)
        b = min(size, int(np.ceil((hi + 1.0) * size / 2.0)) + 1)
        return slice(a, max(a, b))
    return to_px(ys.min(), ys.max()), to_px(xs.min(), xs.max())


def _embed(zero: np.ndarray, part, ys: slice, xs: slice) -> np.ndarray:
    out = zero.copy()
    if part is not None:
        out[:, ys, xs] = part
    return out
