"""Drawing for the procedural shapes: vectorised primitives, the objects built from them, colours,
textures and clutter. shapes.py composes these into images, masks and data sets.

Every object is drawn as a boolean mask in its own frame (body, head, legs... as ellipses, capsules
and convex polygons). All geometry is in units of a 32-pixel reference canvas.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

BACKGROUND = "background"  # a negative-only pseudo-category: textured clutter, no object
_REF = 32.0  # reference canvas side, in geometry units

Arr = np.ndarray
Shape = Callable[[Arr, Arr, np.random.Generator, int], Arr]


# ---------------------------------------------------------------- primitives (vectorised over images)
def _c(x: Arr | float) -> Arr:
    """Per-image parameter [n] -> [n, 1, 1] to broadcast over the pixel grid."""
    return np.asarray(x, dtype=np.float32)[..., None, None]


def _ellipse(u: Arr, v: Arr, cx, cy, a, b, ang=0.0) -> Arr:
    du, dv = u - _c(cx), v - _c(cy)
    co, si = _c(np.cos(ang)), _c(np.sin(ang))
    x, y = co * du + si * dv, co * dv - si * du
    return (x / _c(a)) ** 2 + (y / _c(b)) ** 2 <= 1.0


def _capsule(u: Arr, v: Arr, x0, y0, x1, y1, w) -> Arr:
    """Thick segment (legs, necks, tails, frames): points within w of the segment."""
    x0, y0, dx, dy = _c(x0), _c(y0), _c(np.asarray(x1) - x0), _c(np.asarray(y1) - y0)
    t = np.clip(((u - x0) * dx + (v - y0) * dy) / (dx * dx + dy * dy + 1e-9), 0.0, 1.0)
    return (u - x0 - t * dx) ** 2 + (v - y0 - t * dy) ** 2 <= _c(w) ** 2


def _polygon(u: Arr, v: Arr, pts: Sequence[tuple[Arr, Arr]]) -> Arr:
    """Convex polygon (either winding): inside where all edge cross products share a sign."""
    pos: Arr | None = None
    neg: Arr | None = None
    for (xa, ya), (xb, yb) in zip(pts, [*pts[1:], pts[0]]):
        cross = _c(np.asarray(xb) - xa) * (v - _c(ya)) - _c(np.asarray(yb) - ya) * (u - _c(xa))
        pos = cross >= 0 if pos is None else pos & (cross >= 0)
        neg = cross <= 0 if neg is None else neg & (cross <= 0)
    assert pos is not None and neg is not None  # pts[0] above already failed for an empty polygon
    return pos | neg


def _ring(u: Arr, v: Arr, cx, cy, r, w) -> Arr:
    return np.abs(np.sqrt((u - _c(cx)) ** 2 + (v - _c(cy)) ** 2) - _c(r)) <= _c(w)


def _rect(u: Arr, v: Arr, cx, cy, hw, hh, ang=0.0) -> Arr:
    du, dv = u - _c(cx), v - _c(cy)
    co, si = _c(np.cos(ang)), _c(np.sin(ang))
    return (np.abs(co * du + si * dv) <= _c(hw)) & (np.abs(co * dv - si * du) <= _c(hh))


# ---------------------------------------------------------------- objects (local frame: x forward, y down)
def _quadruped(u: Arr, v: Arr, rng: np.random.Generator, n: int,
               p: dict[str, tuple[float, float]]) -> tuple[Arr, dict]:
    """Body + neck + head + 4 legs + tail: the structure the mammals share, with their proportions."""
    U = lambda key: rng.uniform(*p[key], n)  # noqa: E731  (one draw per image)
    lb, hb = U("body_len"), U("body_h")
    m = _ellipse(u, v, 0, 0, lb / 2, hb / 2)
    # legs: a front and a back pair hanging from the lower body, each swinging (pose)
    leg_len, leg_w = U("leg_len"), U("leg_w")
    for side in (1.0, -1.0):
        base = side * rng.uniform(0.28, 0.36, n) * lb
        for off in (0.0, rng.uniform(0.08, 0.16, n) * lb):
            ang = rng.uniform(-0.45, 0.45, n)
            x0, y0 = base - off, 0.25 * hb
            m |= _capsule(u, v, x0, y0, x0 + leg_len * np.sin(ang), y0 + 0.25 * hb + leg_len * np.cos(ang), leg_w)
    # neck up-forward to the head; the head is tilted nose-down by a per-image angle
    nl, na = U("neck_len"), np.deg2rad(U("neck_ang"))
    nx, ny = 0.42 * lb, -0.15 * hb
    hx, hy = nx + nl * np.cos(na), ny - nl * np.sin(na)
    m |= _capsule(u, v, nx, ny, hx, hy, U("neck_w"))
    tilt = np.deg2rad(U("head_tilt"))
    ha, hbh = U("head_a"), U("head_b")
    m |= _ellipse(u, v, hx + 0.5 * ha * np.cos(tilt), hy + 0.5 * ha * np.sin(tilt), ha, hbh, tilt)
    # tail from the rump; positive angle points up
    tl, ta = U("tail_len"), np.deg2rad(U("tail_ang"))
    tx, ty = -0.47 * lb, -0.1 * hb
    tail_end = (tx - tl * np.cos(ta), ty - tl * np.sin(ta))
    m |= _capsule(u, v, tx, ty, *tail_end, U("tail_w"))
    # where the extras (ears, snout, horns, tuft, wool) attach
    info = dict(hx=hx, hy=hy, ha=ha, hb=hbh, tilt=tilt, lb=lb, hbody=hb, tail_end=tail_end)
    return m, info


def _cat(u, v, rng, n):
    m, h = _quadruped(u, v, rng, n, dict(
        body_len=(1.3, 1.6), body_h=(0.48, 0.6), leg_len=(0.4, 0.55), leg_w=(0.08, 0.11),
        neck_len=(0.15, 0.25), neck_ang=(40, 70), neck_w=(0.12, 0.16), head_a=(0.26, 0.31),
        head_b=(0.23, 0.27), head_tilt=(-10, 15), tail_len=(0.8, 1.1), tail_ang=(30, 100), tail_w=(0.06, 0.09)))
    for dx in (-0.15, 0.15):  # pointed ears
        bx, by = h["hx"] + dx, h["hy"] - 0.8 * h["hb"]
        m |= _polygon(u, v, [(bx - 0.1, by + 0.05), (bx + 0.1, by + 0.05), (bx + 0.02, by - 0.25)])
    return m


def _dog(u, v, rng, n):
    m, h = _quadruped(u, v, rng, n, dict(
        body_len=(1.45, 1.75), body_h=(0.55, 0.68), leg_len=(0.55, 0.72), leg_w=(0.1, 0.13),
        neck_len=(0.28, 0.4), neck_ang=(40, 65), neck_w=(0.16, 0.2), head_a=(0.26, 0.31),
        head_b=(0.2, 0.24), head_tilt=(0, 25), tail_len=(0.4, 0.6), tail_ang=(20, 70), tail_w=(0.07, 0.09)))
    snout = rng.uniform(0.2, 0.28, n)  # long snout forward of the head
    m |= _ellipse(u, v, h["hx"] + 0.5 * h["ha"] + snout * np.cos(h["tilt"]), h["hy"] + snout * np.sin(h["tilt"]) + 0.05,
                  snout, 0.11, h["tilt"])
    m |= _ellipse(u, v, h["hx"] - 0.05, h["hy"] + 0.1, 0.09, 0.22, 0.3)  # floppy ear
    return m


def _cow(u, v, rng, n):
    m, h = _quadruped(u, v, rng, n, dict(
        body_len=(1.9, 2.2), body_h=(0.85, 1.0), leg_len=(0.5, 0.65), leg_w=(0.14, 0.17),
        neck_len=(0.2, 0.3), neck_ang=(0, 25), neck_w=(0.26, 0.32), head_a=(0.33, 0.38),
        head_b=(0.2, 0.24), head_tilt=(30, 60), tail_len=(0.7, 0.85), tail_ang=(-80, -55), tail_w=(0.05, 0.07)))
    m |= _rect(u, v, 0, 0, 0.42 * h["lb"], 0.42 * h["hbody"])  # boxy body
    for dx in (-0.12, 0.1):  # horns
        m |= _capsule(u, v, h["hx"] + dx, h["hy"] - 0.1, h["hx"] + dx - 0.1, h["hy"] - 0.38, 0.05)
    tx, ty = h["tail_end"]
    m |= _ellipse(u, v, tx, ty, 0.08, 0.13)  # tuft
    return m


def _horse(u, v, rng, n):
    m, h = _quadruped(u, v, rng, n, dict(
        body_len=(1.75, 2.0), body_h=(0.6, 0.72), leg_len=(0.9, 1.1), leg_w=(0.1, 0.12),
        neck_len=(0.6, 0.8), neck_ang=(50, 70), neck_w=(0.17, 0.22), head_a=(0.38, 0.44),
        head_b=(0.13, 0.17), head_tilt=(40, 75), tail_len=(0.7, 0.9), tail_ang=(-75, -40), tail_w=(0.1, 0.13)))
    return m


def _sheep(u, v, rng, n):
    m, h = _quadruped(u, v, rng, n, dict(
        body_len=(1.45, 1.7), body_h=(0.9, 1.05), leg_len=(0.3, 0.45), leg_w=(0.07, 0.09),
        neck_len=(0.12, 0.2), neck_ang=(10, 40), neck_w=(0.13, 0.16), head_a=(0.24, 0.28),
        head_b=(0.16, 0.19), head_tilt=(20, 50), tail_len=(0.12, 0.18), tail_ang=(-30, 0), tail_w=(0.09, 0.11)))
    a, b = h["lb"] / 2, h["hbody"] / 2
    for k in range(10):  # woolly outline: bumps around the upper body
        t = np.pi * (1.05 + 0.9 * k / 9)
        m |= _ellipse(u, v, a * np.cos(t) * 0.95, b * np.sin(t) * 0.95, 0.2, 0.2)
    return m


def _aeroplane(u, v, rng, n):  # top view, nose at +x
    fl, fw = rng.uniform(1.1, 1.35, n), rng.uniform(0.12, 0.16, n)
    m = _ellipse(u, v, 0, 0, fl, fw)
    span, sweep, chord = rng.uniform(1.0, 1.35, n), rng.uniform(0.2, 0.6, n), rng.uniform(0.35, 0.5, n)
    tip = rng.uniform(0.12, 0.22, n)
    for s in (1.0, -1.0):
        m |= _polygon(u, v, [(0.15, 0 * s), (0.15 - chord, 0 * s),
                             (0.15 - sweep - tip, s * span), (0.15 - sweep, s * span)])
        m |= _polygon(u, v, [(-0.75 * fl, 0 * s), (-0.95 * fl, 0 * s), (-1.05 * fl, s * 0.42), (-0.93 * fl, s * 0.42)])
    return m


def _bicycle(u, v, rng, n):  # side view
    r, w = rng.uniform(0.42, 0.52, n), rng.uniform(0.07, 0.09, n)
    half = rng.uniform(0.65, 0.78, n)
    m = _ring(u, v, -half, 0.3, r, w) | _ring(u, v, half, 0.3, r, w)
    fw = rng.uniform(0.06, 0.08, n)
    seat, head, crank = (-0.15, -0.35), (0.4 * half / 0.7, -0.38), (0.0, 0.3)
    rear, front = (-half, 0.3), (half, 0.3)
    bars = [(rear, seat), (seat, head), (head, front), (rear, crank), (crank, seat), (crank, head)]
    for (x0, y0), (x1, y1) in bars:
        m |= _capsule(u, v, x0, y0, x1, y1, fw)
    m |= _capsule(u, v, head[0], head[1], head[0] - 0.1, head[1] - 0.25, fw)  # handlebar stem
    m |= _ellipse(u, v, seat[0], seat[1] - 0.08, 0.16, 0.06)  # saddle
    return m


def _bird(u, v, rng, n):  # side view in flight, head at +x
    a, b = rng.uniform(0.55, 0.7, n), rng.uniform(0.2, 0.27, n)
    m = _ellipse(u, v, 0, 0, a, b)
    hr = rng.uniform(0.17, 0.22, n)
    m |= _ellipse(u, v, a * 0.95, -0.12, hr, hr)
    bx = a * 0.95 + hr
    m |= _polygon(u, v, [(bx - 0.04, -0.18), (bx - 0.04, -0.06), (bx + rng.uniform(0.15, 0.3, n), -0.1)])  # beak
    for base, spread in ((0.1, 0.0), (-0.05, 0.35)):  # near and far wing, raised by a pose angle
        ang = np.deg2rad(rng.uniform(20, 140, n)) + spread
        ln = rng.uniform(0.8, 1.1, n)
        m |= _polygon(u, v, [(base + 0.25, -0.05), (base - 0.25, -0.05),
                             (base + ln * np.cos(ang) - 0.15, -ln * np.sin(ang))])
    m |= _polygon(u, v, [(-0.8 * a, -0.05), (-0.8 * a, 0.05), (-a - 0.45, 0.22), (-a - 0.45, -0.2)])  # tail fan
    return m


def _boat(u, v, rng, n):  # side view, sailing boat
    hl, hd = rng.uniform(1.0, 1.25, n), rng.uniform(0.25, 0.38, n)
    rake = rng.uniform(0.15, 0.35, n)
    m = _polygon(u, v, [(-hl, 0), (hl + rake, -0.05), (hl - rake, hd), (-hl + 0.15, hd)])
    mh = rng.uniform(1.1, 1.5, n)
    mx = rng.uniform(-0.2, 0.15, n)
    m |= _capsule(u, v, mx, 0, mx, -mh, 0.05)
    m |= _polygon(u, v, [(mx + 0.04, -mh + 0.05), (mx + 0.04, -0.1), (mx + rng.uniform(0.6, 0.95, n), -0.1)])
    m |= _polygon(u, v, [(mx - 0.04, -mh * 0.85), (mx - 0.04, -0.1), (mx - rng.uniform(0.4, 0.7, n), -0.1)])  # jib
    return m


def _background(u, v, rng, n):  # no object at all
    return np.zeros(u.shape, bool)


# shape function, rotation range (degrees), scale range (reference pixels per object unit)
_OBJECTS: dict[str, tuple[Shape, float, tuple[float, float]]] = {
    "cat": (_cat, 20, (8.0, 10.5)), "cow": (_cow, 15, (6.5, 8.0)), "dog": (_dog, 20, (7.5, 9.5)),
    "horse": (_horse, 15, (6.0, 7.5)), "sheep": (_sheep, 15, (7.5, 9.5)),
    "aeroplane": (_aeroplane, 180, (8.0, 10.0)), "bicycle": (_bicycle, 15, (9.0, 11.0)),
    "bird": (_bird, 30, (8.5, 11.0)), "boat": (_boat, 12, (7.5, 9.5)),
    BACKGROUND: (_background, 0, (1.0, 1.0)),
}


# ---------------------------------------------------------------- colour and texture
def _hsv_to_rgb(h: Arr, s: Arr, v: Arr) -> Arr:
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table[i, np.arange(len(h))]


def _colours(rng: np.random.Generator, n: int) -> Arr:
    """One colour distribution for objects, backgrounds and distractors alike: [n, 3]."""
    return _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0, 0.9, n), rng.uniform(0.1, 1.0, n)).astype(np.float32)


def _lowfreq(rng: np.random.Generator, n: int, size: int, cells: int) -> Arr:
    """Smooth random field [n, size, size] in [0, 1]: bilinear upsampling of a coarse grid."""
    pos = (np.arange(size) + 0.5) / size * (cells - 1)
    lo = np.minimum(np.floor(pos).astype(int), cells - 2)
    interp = np.zeros((size, cells), np.float32)
    interp[np.arange(size), lo] = 1 - (pos - lo)
    interp[np.arange(size), lo + 1] = pos - lo
    return np.einsum("ia,nab,jb->nij", interp, rng.uniform(0, 1, (n, cells, cells)).astype(np.float32), interp)


def _texture(rng: np.random.Generator, n: int, x: Arr, y: Arr) -> Arr:
    """[n, S, S, 3]: two colours mixed by flat / stripes / gradient / blotches / fine noise."""
    size = x.shape[0]
    c1, c2 = _colours(rng, n), _colours(rng, n)
    ang, phase = rng.uniform(0, np.pi, n), rng.uniform(0, 2 * np.pi, n)
    proj = _c(np.cos(ang)) * (x - _REF / 2) + _c(np.sin(ang)) * (y - _REF / 2)
    freq, slope, amp = rng.uniform(0.5, 1.4, n), rng.uniform(0.8, 2.0, n), rng.uniform(0.3, 0.7, n)
    kind = rng.integers(0, 5, n)
    w = np.zeros((n, size, size), np.float32)  # kind 0: flat
    for k, fill in enumerate((  # each kind computed only for the images that use it
        lambda i: np.clip(2 * np.sin(proj[i] * _c(freq[i]) + _c(phase[i])), -1, 1) * 0.5 + 0.5,
        lambda i: np.clip(proj[i] / _REF * _c(slope[i]) + 0.5, 0, 1),
        lambda i: np.clip((_lowfreq(rng, len(i), size, 5) - 0.5) * 4 + 0.5, 0, 1),
        lambda i: rng.uniform(0, 1, (len(i), size, size)) * _c(amp[i]),
    ), start=1):
        i = np.flatnonzero(kind == k)
        if len(i):
            w[i] = fill(i)
    w = w[..., None]
    return c1[:, None, None] * (1 - w) + c2[:, None, None] * w


def _distractor(u: Arr, v: Arr, rng: np.random.Generator, n: int, big: float) -> Arr:
    """Random clutter in canvas units: ellipses, boxes, triangles, sticks, rings; up to `big` in size."""
    cx, cy = rng.uniform(0, _REF, n), rng.uniform(0, _REF, n)
    a, b, ang = rng.uniform(1.0, big, n), rng.uniform(1.0, big, n), rng.uniform(0, np.pi, n)
    d = rng.uniform(-big, big, (6, n))
    w = rng.uniform(0.5, 1.2, n)
    kind = rng.integers(0, 5, n)
    out = np.zeros(u.shape, bool)
    for k, draw in enumerate((  # each kind drawn only where it was picked
        lambda i: _ellipse(u[i], v[i], cx[i], cy[i], a[i], b[i], ang[i]),
        lambda i: _rect(u[i], v[i], cx[i], cy[i], a[i] * 0.8, b[i] * 0.8, ang[i]),
        lambda i: _polygon(u[i], v[i], [(cx[i] + d[0, i], cy[i] + d[1, i]), (cx[i] + d[2, i], cy[i] + d[3, i]),
                                        (cx[i] + d[4, i], cy[i] + d[5, i])]),
        lambda i: _capsule(u[i], v[i], cx[i], cy[i], cx[i] + 1.5 * a[i] * np.cos(ang[i]),
                           cy[i] + 1.5 * a[i] * np.sin(ang[i]), w[i]),
        lambda i: _ring(u[i], v[i], cx[i], cy[i], a[i], w[i] * 0.8),
    )):
        i = np.flatnonzero(kind == k)
        if len(i):
            out[i] = draw(i)
    return out


# public names for shapes.py and other procedural generators (the coordinator's probe images)
paint_texture = _texture
draw_clutter = _distractor
per_image = _c
OBJECTS = _OBJECTS
REF_CANVAS = _REF
