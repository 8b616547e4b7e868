"""Audio features, pooled onto the video's frames: decode (PyAV), extractors (librosa, openSMILE), pooling.

A recording is never decoded into one array: :func:`iter_audio` yields 16 kHz mono blocks through
FFmpeg's own resampler (PyAV, for containers and WAV alike, so a WAV at 44.1 kHz is resampled the
same way), :class:`Rows` turns blocks into 10 ms feature rows with the extractor of
:data:`AUDIO_FEATURES` (or a user's Keras model on log-mel patches: ``file:<model.keras>``,
:mod:`extract.audio_model`), and :class:`Pool` folds each row into the video frame its start falls in:
frame t gets the rows whose start is in [t, t + 1/fps), their mean and std. Times come from the
streams' timestamps (pts x time_base), never from sample counts alone, so audio that starts after
the video (or before it) lands on the right frames.

Example::

    edges = video_frame_edges("tests/media/single_face.mp4")       # 73 edges: 72 frames
    pool = Pool(edges, AUDIO_FEATURES["logmel"].dim)
    rows = Rows(AUDIO_FEATURES["logmel"])
    for start, block in iter_audio("tests/media/single_face.mp4"):
        pool.add(*rows.add(start, block))
    pool.add(*rows.finish())
    features, mask = pool.result()                                  # (72, 128), (72,)
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.registry import ConfigError, Registry
from extract.sources import SourceError

SAMPLE_RATE = 16_000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 64
N_MFCC = 20
TAIL = 1_600  # samples kept back at a block's end (0.1 s): the longest window of any extractor fits in it
BLOCK = 30 * SAMPLE_RATE  # samples computed at once: memory stays flat on a recording of hours


@dataclass(frozen=True)
class AudioSpec:
    """One audio extractor: ``compute(block)`` -> (rows [R, dim], row starts in samples from the block's
    start). ``describe`` goes in the cache's attributes; ``needs`` names the optional package."""

    name: str
    dim: int
    compute: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    describe: str
    needs: str = ""
    context: int = TAIL  # samples kept back at a block's end: the span the last row of a block needs
    stride: int = HOP  # samples between row starts
    offset: float = 0.0  # seconds from a row's start to the moment it describes (a patch's centre)
    extra: tuple = ()  # (key, value) pairs for the cache's attributes (a model's checksum)
    in_worker: bool = True  # runs in a video worker's decode pass (which never imports Keras)
    imports: tuple[str, ...] = ()  # modules ``compute`` imports: the workers' server preloads them


_MEL_BASIS = {}


def _mel(block: np.ndarray) -> np.ndarray:
    """``librosa.feature.melspectrogram(center=False)``, value for value (tests/test_audio.py), from the
    two librosa functions it composes: importing ``librosa.feature`` pulls in scipy.stats and the
    pitch trackers, 2.2 s in every video worker that extracts audio; these two take 1.0 s."""
    from librosa import filters
    from librosa.core.spectrum import stft

    if "mel" not in _MEL_BASIS:
        _MEL_BASIS["mel"] = filters.mel(sr=SAMPLE_RATE, n_fft=WINDOW, n_mels=N_MELS)
    power = np.abs(stft(block, n_fft=WINDOW, hop_length=HOP, win_length=WINDOW, center=False)) ** 2
    return np.einsum("...ft,mf->...mt", power, _MEL_BASIS["mel"], optimize=True)


def _starts(n_rows: int) -> np.ndarray:
    return np.arange(n_rows, dtype=np.int64) * HOP


def logmel(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(mel power + 1e-6), 64 bands; row r starts at sample r * 160."""
    rows = np.log(_mel(block) + 1e-6).T.astype(np.float32)
    return rows, _starts(len(rows))


def mfcc(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """20 MFCCs of the 64-band mel spectrogram in dB."""
    import librosa

    rows = librosa.feature.mfcc(S=librosa.power_to_db(_mel(block)), n_mfcc=N_MFCC).T.astype(np.float32)
    return rows, _starts(len(rows))


_SMILE = {}


def egemaps(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """openSMILE's eGeMAPSv02 low-level descriptors (25 per 10 ms) and their own start times."""
    try:
        import opensmile
    except ImportError:
        raise ConfigError(
            "AUDIO=egemaps needs openSMILE (research-only licence, so optional): "
            "install it with `.venv/bin/pip install -r requirements-audio.txt`, or use AUDIO=logmel"
        ) from None
    if sys.modules.get("tensorflow") is not None:  # a video worker blocks it: None there
        # openSMILE's library corrupts the heap of a process that has loaded TensorFlow (malloc abort).
        raise ConfigError(
            "AUDIO=egemaps cannot run in a process that has loaded TensorFlow (openSMILE aborts there): "
            "run it through make extract, whose audio workers are fresh processes"
        )
    if "smile" not in _SMILE:
        _SMILE["smile"] = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
        )
    frame = _SMILE["smile"].process_signal(block, SAMPLE_RATE)
    starts = frame.index.get_level_values("start").total_seconds().to_numpy()
    return frame.to_numpy(np.float32), np.round(starts * SAMPLE_RATE).astype(np.int64)


AUDIO_FEATURES: Registry[AudioSpec] = Registry("audio extractor", "--audio / AUDIO")
# librosa.util.utils compiles numba helpers when first imported (0.5 s a process), lazily, on stft's first call
_LIBROSA = ("librosa.core.spectrum", "librosa.filters", "librosa.util.utils")
AUDIO_FEATURES.register(
    "logmel",
    AudioSpec(
        "logmel", N_MELS, logmel, f"log-mel {N_MELS} bands (librosa), window {WINDOW}, hop {HOP}", imports=_LIBROSA
    ),
)
AUDIO_FEATURES.register(
    "mfcc",
    AudioSpec(
        "mfcc",
        N_MFCC,
        mfcc,
        f"MFCC {N_MFCC} of log-mel {N_MELS} (librosa), window {WINDOW}, hop {HOP}",
        imports=(*_LIBROSA, "librosa.feature"),
    ),
)
AUDIO_FEATURES.register(
    "egemaps",
    AudioSpec(
        "egemaps", 25, egemaps, "openSMILE eGeMAPSv02 low-level descriptors", needs="opensmile", imports=("opensmile",)
    ),
)


FILE_PREFIX = "file:"


def check_audio_name(name: str) -> None:
    """A one-line error for a wrong AUDIO before anything slow runs (a ``file:`` model is not loaded)."""
    if name.startswith(FILE_PREFIX):
        from extract.audio_model import check_file

        check_file(name[len(FILE_PREFIX) :])
    elif name not in AUDIO_FEATURES:
        raise ConfigError(
            f"unknown audio extractor '{name}' (--audio / AUDIO); choose one of: {', '.join(AUDIO_FEATURES)}, "
            f"or file:<model.keras> (a Keras audio model on log-mel patches)"
        )


def audio_spec(name: str) -> AudioSpec:
    """The extractor of ``name``: a registered one, or ``file:<model.keras>`` (``extract.audio_model``)."""
    if name.startswith(FILE_PREFIX):
        from extract.audio_model import model_spec

        return model_spec(name)
    return AUDIO_FEATURES[name]


def warm_up(name: str) -> None:
    """Pays an extractor's imports and first call (librosa: about 1.3 s) before the first recording,
    while the run's main process loads its backbone; a ``file:`` model or a failing extractor is left
    to the first recording, whose error names it."""
    if not in_worker(name):
        return
    try:
        AUDIO_FEATURES[name].compute(np.zeros(SAMPLE_RATE // 5, np.float32))
    except ValueError:  # e.g. openSMILE missing: the job says so, with the file's name
        return


def audio_imports(name: str) -> tuple[str, ...]:
    """The modules a video worker imports for ``name`` (none where it runs elsewhere or is unknown)."""
    spec = AUDIO_FEATURES.get(name)
    return spec.imports if spec is not None and spec.in_worker else ()


def in_worker(name: str) -> bool:
    """Whether ``name`` runs in a video worker's decode pass (a ``file:`` model needs Keras: no)."""
    return not name.startswith(FILE_PREFIX) and AUDIO_FEATURES[name].in_worker


class Rows:
    """Blocks of samples in, feature rows out, each with its start time in seconds."""

    def __init__(self, spec: AudioSpec):
        self.spec = spec
        self.blocks: list[np.ndarray] = []  # joined once a block's worth is in: no copy per small block
        self.pending = 0
        self.start = 0.0  # time of the first sample not yet turned into rows

    def add(self, start: float, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.blocks and not self.pending:
            self.start = start
        self.blocks.append(block)
        self.pending += len(block)
        if self.pending < BLOCK + self.spec.context:
            return self._empty()
        self.buffer = np.concatenate(self.blocks)
        return self._take(len(self.buffer) - self.spec.context)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows of what is left, the last windows padded with silence."""
        if not self.pending:
            return self._empty()
        self.buffer = np.concatenate([*self.blocks, np.zeros(self.spec.context, np.float32)])
        return self._take(self.pending, end=True)

    def _take(self, consume: int, end: bool = False) -> tuple[np.ndarray, np.ndarray]:
        consume -= consume % self.spec.stride  # the next block's rows continue this block's grid
        rows, starts = self.spec.compute(self.buffer)
        keep = starts < consume
        times = self.start + starts[keep] / SAMPLE_RATE + self.spec.offset
        rest = self.buffer[consume:] if not end else np.zeros(0, np.float32)
        self.blocks, self.pending, self.buffer = [rest], len(rest), None
        self.start += consume / SAMPLE_RATE
        return rows[keep], times

    def _empty(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((0, self.spec.dim), np.float32), np.zeros(0)


class FramePool:
    """Mean and std of the rows whose time falls in each frame's [start, next start), streamed.

    Frame start times (:meth:`frames`) and rows (:meth:`add`) come in, each in time order, from one
    pass over a file; :meth:`take` hands out the frames no later row can fall in. Only the rows and
    frames between the two streams are held, so memory stays flat on a recording of hours.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.starts = array("d")  # every frame's start: the last frame lasts their median step
        self.out = 0  # frames already handed out
        self.end: float | None = None  # the last frame's end, once every frame is in
        self.heard = -np.inf  # the latest row's time
        self.heard_all = False
        self.rows: list[np.ndarray] = []
        self.times: list[np.ndarray] = []
        self.changed = False  # since the last take: without a change, no frame became final

    def frames(self, starts) -> None:
        self.starts.extend(starts)
        self.changed = True

    def add(self, rows: np.ndarray, times: np.ndarray) -> None:
        if len(rows):
            self.rows.append(rows)
            self.times.append(np.asarray(times, np.float64))
            self.heard = float(times[-1])
            self.changed = True

    def frames_done(self, end: float | None = None) -> None:
        """Every frame is in: the last one ends at ``end``, or one median frame step after its start."""
        n = len(self.starts)
        if end is None:
            step = float(np.median(np.diff(self.starts))) if n > 1 else 1 / 30
            end = self.starts[-1] + step if n else 0.0
        self.end = end
        self.changed = True

    def audio_done(self) -> None:
        self.heard_all = True
        self.changed = True

    def take(self) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """(0-based index of the first frame, [n, 2 * dim] mean then std as float32, zeros where no row;
        the mask of frames with audio; rows per frame) of the frames final now (n may be 0)."""
        if not self.changed:  # called after every decoded block: most add no row (rows come per 30 s)
            return self.out, np.zeros((0, 2 * self.dim), np.float32), np.zeros(0, bool), np.zeros(0, np.int64)
        self.changed = False
        edges = np.asarray(self.starts[self.out :], np.float64)
        if self.end is not None:
            edges = np.append(edges, self.end)
        ends = edges[1:]
        n = len(ends) if self.heard_all else int(np.searchsorted(ends, self.heard, side="right"))
        first, total, sq, count = self.out, np.zeros((n, self.dim)), np.zeros((n, self.dim)), np.zeros(n, np.int64)
        if self.rows and n:
            rows, times = np.concatenate(self.rows), np.concatenate(self.times)
            frame = np.searchsorted(edges[: n + 1], times, side="right") - 1
            inside = (frame >= 0) & (frame < n)
            rows64 = rows[inside].astype(np.float64)
            np.add.at(total, frame[inside], rows64)
            np.add.at(sq, frame[inside], rows64**2)
            np.add.at(count, frame[inside], 1)
            later = times >= edges[n] if n < len(ends) or self.end is None else np.zeros(len(times), bool)
            self.rows, self.times = ([rows[later]], [times[later]]) if later.any() else ([], [])
        self.out += n
        mean = total / np.maximum(count, 1)[:, None]
        std = np.sqrt(np.maximum(sq / np.maximum(count, 1)[:, None] - mean**2, 0.0))
        return first, np.concatenate([mean, std], axis=1).astype(np.float32), count > 0, count


class Pool:
    """A :class:`FramePool` over frame edges known up front, its frames gathered in memory (one clip)."""

    def __init__(self, edges: np.ndarray, dim: int):
        self.stream = FramePool(dim)
        self.stream.frames(np.asarray(edges, np.float64)[:-1])
        self.stream.frames_done(float(edges[-1]))
        self.parts: list[tuple] = []

    def add(self, rows: np.ndarray, times: np.ndarray) -> None:
        self.stream.add(rows, times)
        self.parts.append(self.stream.take())

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """([frames, 2 * dim] mean then std, float32; zeros where no row), the mask of frames with audio;
        ``count``: the rows of each frame."""
        self.stream.audio_done()
        self.parts.append(self.stream.take())
        self.count = np.concatenate([p[3] for p in self.parts])
        return np.concatenate([p[1] for p in self.parts]), np.concatenate([p[2] for p in self.parts])


def video_frame_edges(path: str | Path) -> np.ndarray:
    """[frames + 1] times in seconds: each video frame's presentation time, and the last one's end.

    From the video stream's packets (demuxed, not decoded). Frames before time 0 (an edit list's
    pre-roll) are not shown, and no decoder returns them, so they are left out as well.
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise SourceError(f"{path}: no video stream; expected a video whose frames the audio is pooled onto")
            stream = container.streams.video[0]
            base = stream.time_base
            pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0)
    except av.error.FFmpegError as err:
        raise SourceError(f"{path}: cannot be read as a video ({_why(err)}); check the file") from None
    shown = [p for p in pts if p >= 0] or pts
    if not shown:
        raise SourceError(f"{path}: no video frames; check the file")
    times = np.asarray([float(p * base) for p in shown])
    step = float(np.median(np.diff(times))) if len(times) > 1 else 1 / 30
    return np.append(times, times[-1] + step)


def frame_edges(n_frames: int, fps: float) -> np.ndarray:
    """Edges of ``n_frames`` frames at a constant ``fps`` (frame folders, label files)."""
    return np.arange(n_frames + 1) / float(fps)


class AudioDecoder:
    """One audio stream's frames in, (start time in seconds, float32 16 kHz mono samples) blocks out:
    FFmpeg's resampler through PyAV; the first sample of the first block plays at that time."""

    def __init__(self):
        import av

        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self.start: float | None = None

    def blocks(self, frames) -> Iterator[tuple[float, np.ndarray]]:
        for frame in frames:
            if self.start is None:
                self.start = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
            for out in self.resampler.resample(frame):
                yield self.start, _samples(out)

    def flush(self) -> Iterator[tuple[float, np.ndarray]]:
        for out in self.resampler.resample(None):
            yield self.start or 0.0, _samples(out)


def _samples(frame) -> np.ndarray:
    """A resampled (packed float, mono) frame's samples, read in place: ``to_ndarray`` stacks planes
    and took a third of the time of a decoded frame (about 1,000 samples each)."""
    return np.frombuffer(frame.planes[0], np.float32, frame.samples)


def decode_error(path, err) -> SourceError:
    return SourceError(f"{path}: its audio stream cannot be decoded ({err}); check or re-encode the file")


def iter_audio(path: str | Path) -> Iterator[tuple[float, np.ndarray]]:
    """(the stream's start time in seconds, float32 16 kHz mono samples) blocks of the first audio stream,
    in order (:class:`AudioDecoder`).

    Yields nothing when the file has no audio stream. A stream that cannot be decoded raises
    ``SourceError`` naming the file.
    """
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise SourceError(
            f"{path}: cannot be opened ({err}); expected a video or WAV file with an audio track"
        ) from None
    with container:
        if not container.streams.audio:
            return
        decoder = AudioDecoder()
        try:
            yield from decoder.blocks(container.decode(container.streams.audio[0]))
            yield from decoder.flush()
        except av.error.FFmpegError as err:
            raise decode_error(path, err) from None


def _why(err) -> str:
    """FFmpeg's reason without the file name it repeats."""
    return getattr(err, "strerror", None) or str(err)
