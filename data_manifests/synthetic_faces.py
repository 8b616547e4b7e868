"""Drawing for the synthetic dataset: parametric faces driven by facial actions, and occluders.

A face is drawn from a :class:`Subject` (who: shape, skin, eyes, hair) and an action vector (what
the face does, one intensity in [0, 1] per entry of :data:`ACTIONS`, FACS-like). Labels in
:mod:`data_manifests.synthetic` are derived from the same action vector, so what the labels say is
what the pixels show. Drawing happens at twice the output size and is downsampled with area
interpolation, which gives anti-aliased edges for the price of one resize.

Example:

>>> rng = np.random.default_rng(0)
>>> subject = random_subject(rng, "s01")
>>> act = np.zeros(len(ACTIONS), np.float32)
>>> act[A["AU12"]] = 1.0  # a smile
>>> bgr, alpha = render_face(subject, act, size=112)
>>> bgr.shape, alpha.shape
((112, 112, 3), (112, 112))
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

ACTIONS = (
    "AU1",
    "AU2",
    "AU4",
    "AU5",
    "AU6",
    "AU7",
    "AU9",
    "AU10",
    "AU12",
    "AU15",
    "AU18",
    "AU20",
    "AU23",
    "AU24",
    "AU25",
    "AU26",
    "AU43",
    "brow_asym",
    "gaze_x",
    "gaze_y",
)
A = {name: i for i, name in enumerate(ACTIONS)}

# cv2 drawing takes fixed-point coordinates with this many fractional bits: sub-pixel features.
_SHIFT = 4
# Resting faces, one per subject in turn (see Subject.rest); intensities stay below AU_ON = 0.5.
_RESTING = (
    (("AU15", 0.4),),
    (("AU1", 0.4), ("AU2", 0.35)),
    (("AU12", 0.35), ("AU6", 0.25)),
    (("AU4", 0.4),),
    (("AU25", 0.4),),
    (("AU43", 0.4),),
    (("AU24", 0.4),),
    (),
)
CENTER = np.array([0.5, 0.54])  # face centre, crop units: zoom is about this point
_HAIR_STYLES = ("short", "long", "bald", "curly", "bob")
SKIN_TONES = (  # BGR, light to dark; also the colours of occluding hands
    (190, 205, 240),
    (160, 185, 225),
    (130, 165, 210),
    (105, 140, 190),
    (80, 110, 160),
    (60, 85, 125),
    (45, 65, 100),
)


@dataclass(frozen=True)
class Subject:
    """One synthetic person: everything about the face that does not change over time.

    Args:
        name: subject id, e.g. ``"s03"``.
        skin, hair, iris, lips, shirt: BGR colours (0-255).
        face_w, face_h: half-width and half-height of the face oval, in crop units (crop = 1).
        chin: 0 (round jaw) to 1 (pointed chin).
        eye_dx: half the distance between the eye centres.
        eye_w, eye_h: half-width and half-height of an open eye.
        brow_t: eyebrow thickness.
        nose_len, mouth_w, lip_t: nose length, mouth half-width, lip thickness.
        hair_style: one of ``short, long, bald, curly, bob``.
        rest: ``(action, intensity)`` pairs of the resting face (a mouth that turns down, raised
            brows...), drawn on top of every frame but below label thresholds: a single frame
            of such a face can pass for an expression, the change over a clip cannot.
    """

    name: str
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    lips: tuple[float, float, float]
    shirt: tuple[float, float, float]
    face_w: float
    face_h: float
    chin: float
    eye_dx: float
    eye_w: float
    eye_h: float
    brow_t: float
    nose_len: float
    mouth_w: float
    lip_t: float
    hair_style: str
    rest: tuple[tuple[str, float], ...] = ()


def random_subject(rng: np.random.Generator, name: str, index: int = 0) -> Subject:
    """Draw a subject; ``index`` cycles skin tones and hair styles so that subjects differ."""
    skin = np.array(SKIN_TONES[(index * 3) % len(SKIN_TONES)], float) + rng.normal(0, 6, 3)
    dark_hair = rng.random() < 0.7
    hair = rng.uniform(15, 45, 3) if dark_hair else np.array([40, 90, 150]) + rng.normal(0, 15, 3)
    lips = skin * np.array([0.75, 0.7, 1.0]) * rng.uniform(0.8, 0.95)
    return Subject(
        name=name,
        skin=tuple(np.clip(skin, 0, 255)),
        hair=tuple(np.clip(hair, 0, 255)),
        iris=tuple(rng.choice([(40, 70, 100), (120, 90, 40), (60, 110, 60), (30, 40, 60)])),
        lips=tuple(np.clip(lips, 0, 255)),
        shirt=tuple(rng.uniform(30, 220, 3)),
        face_w=rng.uniform(0.29, 0.35),
        face_h=rng.uniform(0.40, 0.45),
        chin=rng.uniform(0.0, 1.0),
        eye_dx=rng.uniform(0.125, 0.155),
        eye_w=rng.uniform(0.06, 0.072),
        eye_h=rng.uniform(0.027, 0.034),
        brow_t=rng.uniform(0.014, 0.024),
        nose_len=rng.uniform(0.11, 0.15),
        mouth_w=rng.uniform(0.085, 0.11),
        lip_t=rng.uniform(0.011, 0.017),
        hair_style=_HAIR_STYLES[index % len(_HAIR_STYLES)],
        rest=tuple((a, v * rng.uniform(0.8, 1.15)) for a, v in _RESTING[index % len(_RESTING)]),
    )


def _fx(points, px: int, zoom: float = 1.0) -> np.ndarray:
    """Crop units -> cv2 fixed-point pixel coordinates, magnified ``zoom`` times about the face
    centre :data:`CENTER`."""
    pts = (np.asarray(points) - CENTER) * zoom + CENTER
    return np.round(pts * (px * (1 << _SHIFT))).astype(np.int32)


def _fx2(x: float, y: float, px: int, zoom: float = 1.0, centre: bool = True) -> tuple[int, int]:
    """One point (or, with ``centre=False``, an axes pair) -> fixed point, without numpy."""
    k = px * (1 << _SHIFT)
    if centre:
        x, y = (x - CENTER[0]) * zoom + CENTER[0], (y - CENTER[1]) * zoom + CENTER[1]
        return int(round(x * k)), int(round(y * k))
    return int(round(x * zoom * k)), int(round(y * zoom * k))


@functools.lru_cache(maxsize=8)
def _bezier_basis(n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return np.stack([(1 - t) ** 2, 2 * (1 - t) * t, t**2])


def _bezier(p0, c, p2, n: int = 12) -> np.ndarray:
    b = _bezier_basis(n)
    return b[0] * p0 + b[1] * c + b[2] * p2


class _Canvas:
    """A BGR canvas and its alpha mask, drawn in crop units."""

    def __init__(self, px: int, zoom: float):
        self.px, self.zoom = px, zoom
        self.img = np.zeros((px, px, 3), np.uint8)
        self.mask = np.zeros((px, px), np.uint8)

    def poly(self, pts, color, mask: bool = False):
        pts = _fx(pts, self.px, self.zoom)
        cv2.fillPoly(self.img, [pts], _col(color), cv2.LINE_AA, _SHIFT)
        if mask:
            cv2.fillPoly(self.mask, [pts], 255, cv2.LINE_AA, _SHIFT)

    def ellipse(self, center, axes, color, angle: float = 0.0, mask: bool = False, thick: int = -1):
        c = _fx2(*center, self.px, self.zoom)
        ax = _fx2(abs(axes[0]), abs(axes[1]), self.px, self.zoom, centre=False)
        cv2.ellipse(self.img, c, ax, angle, 0, 360, _col(color), thick, cv2.LINE_AA, _SHIFT)
        if mask:
            cv2.ellipse(self.mask, c, ax, angle, 0, 360, 255, thick, cv2.LINE_AA, _SHIFT)

    def line(self, pts, color, width: float):
        t = max(1, int(round(width * self.px * self.zoom)))
        cv2.polylines(self.img, [_fx(pts, self.px, self.zoom)], False, _col(color), t, cv2.LINE_AA, _SHIFT)


def _col(color) -> tuple[float, float, float]:
    return tuple(min(255.0, max(0.0, float(c))) for c in color)


def _mix(color, factor: float):
    return tuple(c * factor for c in color)


def render_face(subject: Subject, act: np.ndarray, size: int = 112, zoom: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Draw one face crop, aligned like Aff-Wild2's ``cropped_aligned`` (eyes at ~40% height).

    Args:
        subject: who is drawn.
        act: float array [len(ACTIONS)], action intensities in [0, 1] (``gaze_*`` in [-1, 1]).
        size: output side in pixels.
        zoom: magnification about the face centre: 1 shows head and shoulders (raw video),
            ~1.3 fills the crop with the face as Aff-Wild2's aligned crops do.

    Returns:
        ``(bgr uint8 [size, size, 3], alpha uint8 [size, size])``; alpha is 0 on the background.
    """
    a = {name: float(act[i]) for i, name in enumerate(ACTIONS)}
    for action, value in subject.rest:
        a[action] = min(1.0, a[action] + value)
    cv = _Canvas(2 * size, zoom)
    s = subject
    cx, cy = CENTER
    skin = s.skin
    eye_y = cy - 0.09
    mouth_y = eye_y + s.nose_len + 0.105
    jaw = 0.045 * a["AU26"]

    _hair_back(cv, s, cx, cy)
    cv.poly(
        [(cx - 0.11, cy + 0.2), (cx + 0.11, cy + 0.2), (cx + 0.13, 1.05), (cx - 0.13, 1.05)],
        _mix(skin, 0.72),
        mask=True,
    )
    cv.poly(
        [
            (cx - 0.5, 1.05),
            (cx - 0.42, 0.93),
            (cx - 0.12, 0.89),
            (cx, 0.95),
            (cx + 0.12, 0.89),
            (cx + 0.42, 0.93),
            (cx + 0.5, 1.05),
        ],
        s.shirt,
        mask=True,
    )
    for side in (-1, 1):
        cv.ellipse((cx + side * s.face_w * 0.97, eye_y + 0.05), (0.035, 0.065), _mix(skin, 0.85), mask=True)
    t = np.linspace(0, 2 * np.pi, 56, endpoint=False)
    lower = np.sin(t) > 0
    w = s.face_w * np.where(lower, 1 - (0.18 + 0.2 * s.chin) * np.sin(t) ** 2, 1.0)
    h = np.where(lower, s.face_h + jaw, s.face_h)
    cv.poly(np.stack([cx + w * np.cos(t), cy + h * np.sin(t)], 1), skin, mask=True)

    # Cheeks: AU6 lifts and rounds them; they also push the lower lids up (see _eye).
    lift = 0.03 * a["AU6"] + 0.012 * a["AU12"]
    for side in (-1, 1):
        cv.ellipse(
            (cx + side * (s.eye_dx + 0.02), eye_y + 0.1 - lift),
            (0.06, 0.04 + 0.01 * a["AU6"]),
            _mix(skin, 1.02 + 0.08 * a["AU6"]),
        )
    _nose(cv, s, a, cx, eye_y)
    for side in (-1, 1):
        _eye(cv, s, a, cx + side * s.eye_dx, eye_y, side)
        _brow(cv, s, a, cx, eye_y, side)
    _mouth(cv, s, a, cx, mouth_y + 0.35 * jaw)
    _hair_front(cv, s, cx, cy)
    img, mask = _shade(cv, s, cx, cy)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA), cv2.resize(
        mask, (size, size), interpolation=cv2.INTER_AREA
    )


@functools.lru_cache(maxsize=64)
def _shade_map(face_w: float, face_h: float, cx: float, cy: float, px: int, zoom: float) -> np.ndarray:
    """Brightness factor x128 (uint8, 3 channels): darker towards the face border."""
    yy, xx = np.mgrid[0:px, 0:px].astype(np.float32) / px
    xx, yy = (xx - CENTER[0]) / zoom + CENTER[0], (yy - CENTER[1]) / zoom + CENTER[1]
    r2 = ((xx - cx) / (face_w * 1.05)) ** 2 + ((yy - cy + 0.04) / (face_h * 1.1)) ** 2
    shade = 128 * (1.08 - 0.35 * np.clip(r2, 0, 1.3) ** 1.5)
    return np.repeat(shade[..., None], 3, axis=2).round().astype(np.uint8)


def _shade(cv: _Canvas, s: Subject, cx: float, cy: float):
    """Shade the face: a flat cartoon face does not read as a face to detectors."""
    shade = _shade_map(s.face_w, s.face_h, cx, cy, cv.px, cv.zoom)
    return cv2.multiply(cv.img, shade, scale=1 / 128), cv.mask


def _hair_back(cv: _Canvas, s: Subject, cx: float, cy: float):
    top = cy - s.face_h
    if s.hair_style == "long":
        cv.poly(
            [
                (cx - s.face_w * 1.25, top + 0.1),
                (cx - s.face_w * 1.35, cy + 0.4),
                (cx + s.face_w * 1.35, cy + 0.4),
                (cx + s.face_w * 1.25, top + 0.1),
            ],
            s.hair,
            mask=True,
        )
    if s.hair_style != "bald":
        cv.ellipse((cx, top + 0.12), (s.face_w * 1.16, 0.19), s.hair, mask=True)
    if s.hair_style == "bob":
        cv.ellipse((cx, cy - 0.02), (s.face_w * 1.2, s.face_h * 0.8), s.hair, mask=True)
    if s.hair_style == "curly":
        for k in range(9):
            ang = np.pi * (1.0 + k / 8)
            cv.ellipse(
                (cx + 1.1 * s.face_w * np.cos(ang), top + 0.13 + 0.17 * np.sin(ang)), (0.06, 0.06), s.hair, mask=True
            )


def _hair_front(cv: _Canvas, s: Subject, cx: float, cy: float):
    top = cy - s.face_h
    if s.hair_style == "bald":
        cv.ellipse((cx, top + 0.06), (s.face_w * 0.6, 0.03), _mix(s.skin, 1.1))  # scalp highlight
        return
    line = top + (0.1 if s.hair_style != "curly" else 0.085)
    pts = [
        (cx - s.face_w * 1.02, cy - 0.04),
        (cx - s.face_w * 0.95, line),
        (cx - 0.1, line - 0.012),
        (cx + 0.05, line + 0.02 * (s.hair_style == "bob")),
        (cx + s.face_w * 0.95, line),
        (cx + s.face_w * 1.02, cy - 0.04),
        (cx + s.face_w * 1.05, top - 0.02),
        (cx - s.face_w * 1.05, top - 0.02),
    ]
    cv.poly(pts, s.hair, mask=True)


def _nose(cv: _Canvas, s: Subject, a: dict, cx: float, eye_y: float):
    tip_y = eye_y + s.nose_len
    wrinkle = a["AU9"]
    flare = 0.012 * wrinkle + 0.004 * a["AU10"]
    cv.line([(cx + 0.018, eye_y + 0.02), (cx + 0.024, tip_y - 0.02)], _mix(s.skin, 0.82), 0.012)
    cv.ellipse((cx, tip_y - 0.005), (0.03 + flare, 0.022), _mix(s.skin, 0.9))
    cv.ellipse((cx, tip_y - 0.012), (0.018, 0.012), _mix(s.skin, 1.06))
    for side in (-1, 1):
        cv.ellipse(
            (cx + side * (0.02 + flare * 0.7), tip_y + 0.008 - 0.012 * wrinkle),
            (0.011 + flare * 0.4, 0.006),
            _mix(s.skin, 0.4),
            angle=side * 20,
        )
    if wrinkle > 0.05:
        for k in range(3):
            y = eye_y + 0.005 + 0.016 * k
            cv.line(
                [(cx - 0.028, y + 0.004), (cx, y), (cx + 0.028, y + 0.004)], _mix(s.skin, 1 - 0.35 * wrinkle), 0.007
            )
    fold = min(1.0, a["AU12"] + a["AU10"] + 0.8 * a["AU9"] + 0.4 * a["AU6"])
    for side in (-1, 1):
        cv.line(
            _bezier(
                (cx + side * 0.05, tip_y - 0.01),
                (cx + side * 0.1, tip_y + 0.05),
                (cx + side * (s.mouth_w + 0.04), tip_y + 0.11),
            ),
            _mix(s.skin, 0.96 - 0.3 * fold),
            0.008,
        )


def _eye(cv: _Canvas, s: Subject, a: dict, ex: float, ey: float, side: int):
    open_ = 1 + 0.75 * a["AU5"] - 0.45 * a["AU7"] - 0.3 * a["AU6"] - 0.25 * a["AU4"]
    open_ *= 1 - a["AU43"]
    up = s.eye_h * max(open_, 0.0) * 1.25
    low = s.eye_h * 0.75 * max(1 - 0.55 * a["AU6"] - 0.5 * a["AU7"] + 0.3 * a["AU5"], 0.1)
    low *= 1 - 0.8 * a["AU43"]
    inner, outer = (ex - side * s.eye_w, ey + 0.004), (ex + side * s.eye_w, ey - 0.002)
    upper = _bezier(inner, (ex, ey - 2 * up), outer)
    lower = _bezier(outer, (ex, ey + 2 * low), inner)
    # Lid crease and socket shadow above the eye: they read as an eye even when it is closed.
    cv.ellipse((ex, ey - 0.012), (s.eye_w * 1.25, s.eye_h * 2.2), _mix(s.skin, 0.85))
    if up + low > 0.004:
        cv.poly(np.vstack([upper, lower]), (225, 228, 235))
        pts = np.vstack([upper, lower])
        fixed = _fx(pts, cv.px, cv.zoom)
        x0, y0 = (fixed.min(0) >> _SHIFT) - 1
        x1, y1 = (fixed.max(0) >> _SHIFT) + 2
        x0, y0 = max(x0, 0), max(y0, 0)
        before = cv.img[y0:y1, x0:x1].copy()
        ix = ex + 0.45 * s.eye_w * a["gaze_x"]
        iy = ey + 0.004 + 0.3 * s.eye_h * a["gaze_y"]
        cv.ellipse((ix, iy), (s.eye_h * 1.35, s.eye_h * 1.35), s.iris)
        cv.ellipse((ix, iy), (s.eye_h * 0.65, s.eye_h * 0.65), (15, 15, 15))
        cv.ellipse((ix - 0.006, iy - 0.008), (0.004, 0.004), (245, 245, 245))
        # The iris is clipped to the eye opening: restore what lies outside it.
        outside = np.ones(before.shape[:2], np.uint8)
        cv2.fillPoly(outside, [fixed - np.array([x0, y0]) * (1 << _SHIFT)], 0, cv2.LINE_8, _SHIFT)
        cv2.copyTo(before, outside, cv.img[y0:y1, x0:x1])
    cv.line(upper, (20, 20, 25), 0.016)
    cv.line(lower, _mix(s.skin, 0.6), 0.006)
    crease = ey - 2 * up * 0.5 - 0.018 - 0.01 * a["AU5"]
    cv.line(
        _bezier(
            (ex - side * s.eye_w * 0.8, crease + 0.008), (ex, crease - 0.01), (ex + side * s.eye_w, crease + 0.004)
        ),
        _mix(s.skin, 0.7),
        0.006,
    )


def _brow(cv: _Canvas, s: Subject, a: dict, cx: float, eye_y: float, side: int):
    base = eye_y - 0.065 - 0.01 * a["AU5"]
    asym = 0.045 * a["brow_asym"] * (side > 0)
    inner_y = base + 0.05 * a["AU4"] - 0.06 * a["AU1"] - asym + 0.012 * a["AU9"]
    outer_y = base + 0.008 + 0.01 * a["AU4"] - 0.05 * a["AU2"] - asym
    mid_y = 0.5 * (inner_y + outer_y) - 0.018 + 0.01 * a["AU4"] - 0.015 * a["AU2"]
    inner_x = cx + side * (s.eye_dx - s.eye_w * 0.8 - 0.03 * a["AU4"] + 0.005 * a["AU1"])
    thick = s.brow_t * (1 + 0.5 * a["AU4"])  # lowered brows bunch up
    outer_x = cx + side * (s.eye_dx + s.eye_w * 1.25)
    ctrl_y = mid_y * 2 - 0.5 * (inner_y + outer_y)
    top = _bezier((inner_x, inner_y - thick * 0.5), (cx + side * s.eye_dx, ctrl_y - thick * 0.5), (outer_x, outer_y))
    bottom = _bezier(
        (outer_x, outer_y + thick * 0.3), (cx + side * s.eye_dx, ctrl_y + thick * 0.6), (inner_x, inner_y + thick * 0.9)
    )
    # Brows darker than the skin whatever the hair colour: they carry AU1, AU2 and AU4.
    cv.poly(np.vstack([top, bottom]), [min(h, 0.5 * k) * 0.85 for h, k in zip(s.hair, s.skin)])
    if a["AU4"] > 0.05 and side > 0:
        cv.ellipse((cx, base + 0.02), (0.03, 0.025), _mix(s.skin, 1 - 0.15 * a["AU4"]))
        for dx in (-0.012, 0.012):
            cv.line([(cx + dx, base - 0.015), (cx + dx * 0.6, base + 0.035)], _mix(s.skin, 1 - 0.5 * a["AU4"]), 0.008)
    if a["AU1"] + a["AU2"] > 0.8 and side > 0:
        k = min(1.0, a["AU1"] + a["AU2"] - 0.8)
        for j in range(3):
            y = base - 0.06 - 0.022 * j
            cv.line(
                _bezier((cx - 0.12, y + 0.006), (cx, y - 0.01), (cx + 0.12, y + 0.006)),
                _mix(s.skin, 1 - 0.25 * k),
                0.006,
            )


def _mouth(cv: _Canvas, s: Subject, a: dict, cx: float, my: float):
    mw = s.mouth_w * (1 + 0.3 * a["AU12"] + 0.35 * a["AU20"] - 0.45 * a["AU18"] - 0.12 * a["AU23"])
    corner_y = my - 0.045 * a["AU12"] + 0.04 * a["AU15"] + 0.012 * a["AU20"]
    gap = 0.03 * a["AU25"] + 0.07 * a["AU26"] + 0.012 * a["AU18"] * a["AU25"]
    lift = 0.018 * a["AU10"]
    thin = 1 - 0.6 * a["AU24"] - 0.35 * a["AU23"] + 0.6 * a["AU18"]
    ut, lt = s.lip_t * thin, s.lip_t * 1.3 * thin
    left, right = (cx - mw, corner_y), (cx + mw, corner_y)
    ctrl = 2 * my - corner_y
    up_in = _bezier(left, (cx, ctrl - gap - lift), right, 15)
    lo_in = _bezier(left, (cx, ctrl + gap), right, 15)
    u = np.linspace(0, 1, 15)
    bump = np.sin(np.pi * u) ** 0.6
    bow = 1 - 0.3 * np.exp(-(((u - 0.5) / 0.07) ** 2))
    up_out = up_in - np.stack([np.zeros(15), ut * 1.6 * bump * bow + lift * bump], 1)
    lo_out = lo_in + np.stack([np.zeros(15), lt * 1.6 * bump], 1)
    if gap > 0.003:
        cv.poly(np.vstack([up_in, lo_in[::-1]]), (45, 35, 85))
        teeth = min(gap * 0.55 + lift, 0.02)
        cv.poly(np.vstack([up_in[2:-2], (up_in + [0, teeth])[2:-2][::-1]]), (215, 222, 228))
    cv.poly(np.vstack([up_out, up_in[::-1]]), _mix(s.lips, 0.92))
    cv.poly(np.vstack([lo_in, lo_out[::-1]]), s.lips)
    cv.line(up_in if gap <= 0.003 else up_in[1:-1], _mix(s.lips, 0.45), 0.006)
    press = a["AU24"] + a["AU23"]
    for side, pt in ((-1, left), (1, right)):
        dark = _mix(s.skin, 1 - 0.25 * min(press + a["AU15"] + a["AU12"], 1))
        down = 0.02 * a["AU15"] - 0.012 * a["AU12"]
        cv.line([(pt[0] + side * 0.003, pt[1]), (pt[0] + side * 0.012, pt[1] + 0.004 + down)], dark, 0.006)


def draw_occluder(bgr: np.ndarray, alpha: np.ndarray, kind: str, x: float, y: float, color, zoom: float = 1.0) -> None:
    """Cover part of a face crop in place: ``bar`` (a strip, e.g. a phone or a scarf) or ``hand``.

    ``x, y`` is the centre in the crop units of :func:`render_face` (with the same ``zoom``); the
    occluder also becomes opaque in ``alpha``.
    """
    px = bgr.shape[0]
    fx = functools.partial(_fx, px=px, zoom=zoom)
    pt = functools.partial(_fx2, px=px, zoom=zoom)
    ax = functools.partial(_fx2, px=px, zoom=zoom, centre=False)
    layers = ((bgr, _col(color)), (alpha, 255))
    if kind == "bar":
        pts = fx([(x - 0.4, y - 0.07), (x + 0.4, y - 0.05), (x + 0.4, y + 0.07), (x - 0.4, y + 0.05)])
        for img, col in layers:
            cv2.fillPoly(img, [pts], col, cv2.LINE_AA, _SHIFT)
        return
    palm = (pt(x, y + 0.06), ax(0.13, 0.1))
    fingers = [(pt(x - 0.1 + 0.066 * k, y - 0.06 - 0.02 * (k % 2)), ax(0.028, 0.085)) for k in range(4)]
    for img, col in layers:
        for center, axes in [palm, *fingers]:
            cv2.ellipse(img, center, axes, 0, 0, 360, col, -1, cv2.LINE_AA, _SHIFT)
    for k in range(3):
        x0 = x - 0.067 + 0.066 * k
        cv2.line(bgr, pt(x0, y - 0.1), pt(x0, y), _col(_mix(color, 0.7)), 1, cv2.LINE_AA, _SHIFT)
