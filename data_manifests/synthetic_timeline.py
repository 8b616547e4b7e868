"""What happens in a synthetic clip, frame by frame: expressions, facial actions, labels, nuisance.

An expression is an *event* (onset ramp, apex, offset ramp, then a gap) that sets facial actions
(:data:`EXPR_PROFILES`, entries of :data:`data_manifests.synthetic_faces.ACTIONS`). Labels come
from the same actions: the EXPR class where the event is at least :data:`EXPR_ON` strong, an AU
where its action reaches :data:`AU_ON`, and valence/arousal pulled towards :data:`VA_TARGETS` and
smoothed. Speech, blinks and AU bursts that are not expressions, and the camera's nuisance
(:func:`nuisance`) change single frames, so one frame can be ambiguous where a sequence is not.

Example:

>>> rng = np.random.default_rng(0)
>>> tl = timeline(rng, 100, forced=(3,))  # 100 frames holding at least one Fear event
>>> tl["act"].shape, tl["au"].shape, tl["va"].shape
((100, 20), (100, 12), (100, 2))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_manifests import synthetic_faces as faces
from data_manifests.schema import AU_NAMES, EXPR_CLASSES

# Apex action intensities of each class's events (entries of faces.ACTIONS; gaze in [-1, 1]).
EXPR_PROFILES: dict[str, dict[str, float]] = {
    "Neutral": {},
    "Anger": {"AU4": 1.0, "AU7": 0.8, "AU23": 0.7, "AU24": 0.8, "AU5": 0.3},
    "Disgust": {"AU9": 1.0, "AU10": 0.9, "AU4": 0.5, "AU15": 0.4, "AU7": 0.5, "AU25": 0.3},
    "Fear": {"AU1": 1.0, "AU2": 0.7, "AU4": 0.7, "AU5": 1.0, "AU20": 1.0, "AU25": 0.8, "AU26": 0.3},
    "Happiness": {"AU6": 0.9, "AU12": 1.0, "AU25": 0.8, "AU26": 0.25, "AU7": 0.2},
    "Sadness": {"AU1": 1.0, "AU4": 0.6, "AU15": 1.0, "AU43": 0.3, "gaze_y": 0.6},
    "Surprise": {"AU1": 1.0, "AU2": 1.0, "AU5": 0.9, "AU25": 1.0, "AU26": 0.9},
    "Other": {"AU18": 1.0, "brow_asym": 1.0, "gaze_x": 0.9, "AU23": 0.3},
}
# Where each class pulls valence and arousal at the apex.
VA_TARGETS = {
    "Neutral": (0.0, 0.0),
    "Anger": (-0.6, 0.6),
    "Disgust": (-0.6, 0.2),
    "Fear": (-0.5, 0.7),
    "Happiness": (0.65, 0.4),
    "Sadness": (-0.6, -0.4),
    "Surprise": (0.2, 0.75),
    "Other": (-0.1, 0.15),
}
# Event sampling weight and apex length range (frames), tuned so that frame shares resemble the
# Aff-Wild2 EXPR training set: Neutral and Other common, Fear and Disgust rare.
EVENTS = {
    "Anger": (0.06, 8, 30),
    "Disgust": (0.015, 6, 16),
    "Fear": (0.015, 6, 16),
    "Happiness": (0.22, 20, 70),
    "Sadness": (0.14, 20, 55),
    "Surprise": (0.15, 6, 16),
    "Other": (0.35, 30, 90),
}
EXPR_ON = 0.3  # event strength from which the frame carries the event's class
AU_ON = 0.5  # action intensity from which an AU is labelled present
FORCED_APEX = 12  # the events that put every class in every split are kept this short
_AU_IDX = [faces.A[name] for name in AU_NAMES]


@dataclass(frozen=True)
class _Event:
    cls: int
    forced: bool
    onset: int
    apex: int
    offset: int
    gap: int
    peak: float
    profile: np.ndarray

    @property
    def length(self) -> int:
        return self.onset + self.apex + self.offset + self.gap


def _walk(rng: np.random.Generator, n: int, sigma: float, tau: float) -> np.ndarray:
    """A smooth random walk (AR(1)) with stationary std ``sigma`` and time constant ``tau``."""
    k = np.exp(-1.0 / tau)
    steps = rng.normal(0, sigma * np.sqrt(1 - k * k), n)
    out = np.empty(n)
    out[0] = rng.normal(0, sigma)
    for i in range(1, n):
        out[i] = k * out[i - 1] + steps[i]
    return out


def _bursts(rng: np.random.Generator, n: int, rate: float, lo: int, hi: int) -> list[tuple]:
    """Non-empty runs ``(start, end)`` of length lo..hi, about ``rate`` per frame."""
    count = rng.poisson(rate * n)
    starts = rng.integers(0, max(n - lo, 1), count)
    return [(int(s), int(min(n, s + rng.integers(lo, hi + 1)))) for s in starts]


def _event(rng: np.random.Generator, cls: int, forced: bool) -> _Event:
    name = EXPR_CLASSES[cls]
    _, lo, hi = EVENTS[name]
    if forced:
        lo, hi = min(lo, FORCED_APEX), min(hi, FORCED_APEX)
    profile = np.zeros(len(faces.ACTIONS))
    for action, value in EXPR_PROFILES[name].items():
        profile[faces.A[action]] = value * rng.uniform(0.75, 1.15)
    if name == "Happiness" and rng.random() < 0.5:  # a closed-mouth smile
        profile[[faces.A["AU25"], faces.A["AU26"]]] = 0
    if name == "Other":
        profile[faces.A["gaze_x"]] *= rng.choice([-1, 1])
    return _Event(
        cls,
        forced,
        int(rng.integers(4, 11)),
        int(rng.integers(lo, hi + 1)),
        int(rng.integers(4, 13)),
        int(rng.integers(3, 11 if forced else 25)),
        float(rng.uniform(0.55, 1.0)),
        profile,
    )


def _envelope(e: _Event, rng: np.random.Generator) -> np.ndarray:
    """Onset ramp, apex with a little tremor, offset ramp, then the gap: strength per frame."""
    ramp = lambda k: (1 - np.cos(np.pi * (np.arange(1, k + 1) / (k + 1)))) / 2  # noqa: E731
    apex = 1 - 0.08 * np.abs(_walk(rng, e.apex, 1.0, 4.0)).clip(0, 1)
    return e.peak * np.concatenate([ramp(e.onset), apex, ramp(e.offset)[::-1], np.zeros(e.gap)])


def timeline(rng: np.random.Generator, n_target: int, forced: tuple[int, ...]) -> dict:
    """Per-frame actions and labels of one sample.

    Args:
        rng: the sample's generator.
        n_target: wanted frame count; more frames are used if the forced events need them.
        forced: classes that must occur (each once, whole, in random order among the others).

    Returns:
        dict of ``act`` float [T, len(ACTIONS)], ``expr`` int [T], ``strength`` float [T],
        ``au`` int [T, 12] and ``va`` float [T, 2], all valid (invalid runs are added later).
    """
    events = [_event(rng, c, forced=True) for c in forced]
    n = max(n_target, sum(e.length for e in events) + 6)
    weights = np.array([EVENTS[EXPR_CLASSES[c]][0] for c in range(1, len(EXPR_CLASSES))])
    t = int(rng.integers(0, 11))
    total = t + sum(e.length for e in events)
    while total < n:  # the last event may run past the end, as when a recording is cut
        c = rng.choice(np.arange(1, len(EXPR_CLASSES)), p=weights / weights.sum())
        events.append(_event(rng, int(c), forced=False))
        total += events[-1].length
    events = [events[i] for i in rng.permutation(len(events))]
    if len(events) > len(forced) and events[-1].forced:  # forced events are kept whole
        swap = next(i for i, e in enumerate(events) if not e.forced)
        events[swap], events[-1] = events[-1], events[swap]
    act = np.zeros((n, len(faces.ACTIONS)))
    expr, strength, va_event = np.zeros(n, int), np.zeros(n), np.zeros((n, 2))
    for e in events:
        env = _envelope(e, rng)[: max(n - t, 0)]
        span = slice(t, t + len(env))
        act[span] = np.maximum(act[span], env[:, None] * e.profile[None])
        act[span, faces.A["gaze_x"]] = env * e.profile[faces.A["gaze_x"]]
        expr[span] = np.where(env >= EXPR_ON, e.cls, 0)
        strength[span] = env
        target = np.array(VA_TARGETS[EXPR_CLASSES[e.cls]]) + rng.normal(0, 0.1, 2)
        va_event[span] = env[:, None] * target[None]
        t += e.length
    talk = np.zeros(n)
    for s, end in _bursts(rng, n, 1 / 90, 15, 45):  # speech: the mouth opens and closes
        k = np.arange(end - s)
        period = rng.uniform(5, 9)
        talk[s:end] = rng.uniform(0.4, 0.9) * (0.5 + 0.5 * np.sin(2 * np.pi * k / period))
    act[:, faces.A["AU25"]] = np.maximum(act[:, faces.A["AU25"]], talk)
    act[:, faces.A["AU26"]] = np.maximum(act[:, faces.A["AU26"]], 0.45 * talk)
    for s, end in _bursts(rng, n, 1 / 70, 2, 3):
        act[s:end, faces.A["AU43"]] = 1.0
    for s, end in _bursts(rng, n, 1 / 80, 6, 20):  # AUs that are not an expression
        names = [["AU1", "AU2"], ["AU7"], ["AU24"], ["AU10"], ["AU4"], ["AU15"]]
        idx = [faces.A[a] for a in names[rng.integers(len(names))]]
        env = np.sin(np.pi * np.arange(1, end - s + 1) / (end - s + 1)) * rng.uniform(0.55, 0.8)
        act[s:end, idx] = np.maximum(act[s:end, idx], env[:, None])
    act[:, faces.A["gaze_x"]] += 0.3 * np.tanh(_walk(rng, n, 1.0, 25))
    act[:, faces.A["gaze_y"]] += 0.2 * np.tanh(_walk(rng, n, 1.0, 25))
    act = np.clip(act, -1, 1)
    base = rng.normal([0.05, -0.05], 0.15)
    drift = np.stack([_walk(rng, n, 0.08, 40), _walk(rng, n, 0.08, 40)], 1)
    va = base + drift + va_event + np.stack([np.zeros(n), 0.12 * talk], 1)
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    va = np.stack([np.convolve(np.pad(c, 6, mode="edge"), kernel / kernel.sum(), "valid") for c in va.T], 1)
    return {
        "act": act,
        "expr": expr,
        "strength": strength,
        "au": (act[:, _AU_IDX] >= AU_ON).astype(int),
        "va": np.clip(va, -1, 1).round(3),
    }


def invalidate(rng: np.random.Generator, tl: dict) -> dict:
    """Short runs of unannotated frames: VA -5, EXPR -1, AU -1 (independently), never hiding the
    last valid frame of a class."""
    n = len(tl["expr"])
    va, expr, au = tl["va"].copy(), tl["expr"].copy(), tl["au"].copy()
    for labels, marker in ((va, -5), (expr, -1), (au, -1)):
        if rng.random() < 0.35:
            length = int(rng.integers(5, 21))
            start = int(rng.integers(0, max(n - length, 1)))
            kept = set(np.delete(tl["expr"], np.s_[start : start + length]).tolist())
            if labels is not expr or kept == set(tl["expr"].tolist()):
                labels[start : start + length] = marker
    return {"va": va, "expr": expr, "au": au}


def nuisance(rng: np.random.Generator, n: int, lost_runs: int) -> dict:
    """Per-frame camera and pose: smooth drifts, sudden head turns, flicker, blur and noise spikes,
    occlusions, and runs where the face is lost (``lost``: no jpg, no face in the raw video)."""
    turn = np.zeros(n)
    for s, end in _bursts(rng, n, 1 / 100, 4, 8):
        turn[s:end] += rng.choice([-1, 1]) * rng.uniform(8, 15)
    blur = np.full(n, rng.uniform(0, 0.6))
    for s, end in _bursts(rng, n, 1 / 40, 3, 8):
        blur[s:end] = rng.uniform(1.0, 2.2)
    noise = np.full(n, rng.uniform(2, 6))
    spikes = rng.random(n) < 0.05
    noise[spikes] = rng.uniform(12, 20, int(spikes.sum()))
    gain = rng.uniform(0.75, 1.15) * (1 + _walk(rng, n, 0.08, 30))
    flicker = rng.random(n) < 0.03
    gain[flicker] *= rng.choice([0.6, 1.4], int(flicker.sum()))
    occ = []
    for s, end in _bursts(rng, n, 1 / 55, 3, 10):
        kind = ["bar", "hand"][rng.integers(2)]
        y = rng.choice([0.45, 0.69]) if kind == "bar" else rng.uniform(0.6, 0.72)
        skin = np.array(faces.SKIN_TONES[rng.integers(len(faces.SKIN_TONES))]) + rng.normal(0, 8, 3)
        color = rng.uniform(30, 220, 3) if kind == "bar" else skin
        occ.append((s, end, kind, rng.uniform(0.35, 0.65), y, rng.normal(0, 0.01, 2), color))
    lost = np.zeros(n, bool)
    for start in rng.integers(0, max(n - 2, 1), lost_runs):
        lost[start : start + rng.integers(2, 11)] = True
    return {
        "dx": _walk(rng, n, 0.02, 20),
        "dy": _walk(rng, n, 0.015, 20),
        "rot": _walk(rng, n, 4.0, 25) + turn,
        "scale": 1 + _walk(rng, n, 0.03, 30),
        "gain": gain,
        "grad": np.clip(_walk(rng, n, 0.2, 50), -0.35, 0.35),
        "cast": rng.uniform(0.9, 1.1, 3),
        "blur": blur,
        "noise": noise,
        "occ": occ,
        "lost": lost,
        "quality": int(rng.integers(80, 96)),
    }
