"""The synthetic dataset's sound: a voice whose pitch, loudness and speaking rate follow arousal.

Each subject speaks in turns of syllables (a harmonic source under a raised-cosine envelope), with
pauses between the turns and a noise floor. Arousal ``a`` in [-1, 1] moves the pitch by half an octave either way, the
level by 10 dB either way and the syllable rate between 1 and 5 per second. Arousal is partly
invisible in the synthetic faces (its slow drift is drawn nowhere in the face), so this sound holds
what an audio-visual model can add to a visual one. Two subjects of one video talk over each other
in one track, each in their own pitch.

:func:`write_audio` writes ``<root>/wav/<video>.wav`` (16 kHz, 16-bit) and, for a raw video, muxes
the same signal into its mp4 as an AAC track with PyAV (the video packets are copied unchanged).

Example:

>>> rng = np.random.default_rng(0)
>>> voice(rng, np.zeros(30), fps=30).shape   # one second of sound for 30 frames
(16000,)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RATE = 16_000
HARMONICS = 10
NOISE = 0.004  # the floor that pauses leave: valid audio of silence, not missing audio


def _pauses(rng: np.random.Generator, n: int) -> np.ndarray:
    """1 while the subject speaks (turns of 1.5-4 s), 0 in the pauses between (0.4-1.5 s): a listener
    hears arousal only while someone talks, a viewer sees an expression whenever it is made."""
    talk = np.zeros(n)
    t = int(rng.uniform(0, 1.0) * RATE)
    while t < n:
        turn = int(rng.uniform(1.5, 4.0) * RATE)
        talk[t : t + turn] = 1.0
        t += turn + int(rng.uniform(0.4, 1.5) * RATE)
    ramp = np.hanning(801)  # 50 ms fades, so a pause starts and ends without a click
    return np.convolve(talk, ramp / ramp.sum(), "same")


def _intonation(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A slow wander in [-1, 1] that has nothing to do with arousal (a speaker's own melody and emphasis)."""
    knots = np.arange(0, t[-1] + 0.5, 0.25) if len(t) else np.zeros(1)
    walk = np.cumsum(rng.normal(0, 0.35, len(knots)))
    walk -= np.convolve(np.pad(walk, 4, mode="edge"), np.ones(9) / 9, "valid")  # no long-term drift
    return np.tanh(np.interp(t, knots, walk))


def voice(rng: np.random.Generator, arousal: np.ndarray, fps: float, base_f0: float = 150.0) -> np.ndarray:
    """float32 samples at :data:`RATE` for the ``len(arousal)`` frames at ``fps``; ``arousal`` per frame.

    Pitch and level follow arousal plus an intonation of their own, so the sound tells arousal
    only in part, as the face does: each modality holds what the other lacks.
    """
    n = int(round(len(arousal) / fps * RATE))
    t = np.arange(n) / RATE
    a = np.interp(t, (np.arange(len(arousal)) + 0.5) / fps, np.clip(arousal, -1, 1))
    melody, emphasis = _intonation(rng, t), _intonation(rng, t)
    f0 = base_f0 * 2.0 ** (0.5 * a + 0.3 * melody) * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    source = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, HARMONICS + 1))
    syllables = 0.5 - 0.5 * np.cos(2 * np.pi * np.cumsum(3.0 + 2.0 * a) / RATE)
    level = 0.03 * 10.0 ** (0.5 * a + 0.3 * emphasis)
    return (level * syllables * _pauses(rng, n) * source).astype(np.float32)


def soundtrack(rngs: list[np.random.Generator], arousals: list[np.ndarray], fps: float) -> np.ndarray:
    """One track of every subject's voice (each with its own pitch) over a noise floor."""
    n = max(len(a) for a in arousals)
    voices = [voice(r, a, fps, base_f0=r.uniform(100, 220)) for r, a in zip(rngs, arousals)]
    mix = np.sum([np.pad(v, (0, max(len(w) for w in voices) - len(v))) for v in voices], axis=0)
    mix = mix[: int(round(n / fps * RATE))]
    return (mix + NOISE * rngs[0].standard_normal(len(mix))).astype(np.float32)


def _mux(video: Path, samples: np.ndarray) -> None:
    """Replaces ``video`` with a copy that carries ``samples`` as an AAC track."""
    import av

    tmp = video.with_suffix(".audio.mp4")
    with av.open(str(video)) as inp, av.open(str(tmp), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        aout = out.add_stream("aac", rate=RATE, layout="mono")
        for packet in inp.demux(vin):
            if packet.dts is not None:
                packet.stream = vout
                out.mux(packet)
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = RATE
        for packet in aout.encode(frame):
            out.mux(packet)
        for packet in aout.encode(None):
            out.mux(packet)
    tmp.replace(video)


def write_audio(root: Path, video: str, samples: np.ndarray, raw: Path | None) -> None:
    """``root/wav/<video>.wav`` and, when ``raw`` is given, that mp4's audio track."""
    import soundfile as sf

    (root / "wav").mkdir(exist_ok=True)
    sf.write(root / "wav" / f"{video}.wav", samples, RATE, subtype="PCM_16")
    if raw is not None:
        _mux(raw, samples)
