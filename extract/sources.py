"""Frame sources: raw videos decoded with PyAV (FFmpeg), and pre-cropped frame folders.

Both are generators that hold one frame at a time, so no process ever has a whole video in
memory. Frame numbers are 1-based everywhere, as in the Aff-Wild2 annotation files and the cache.

* :func:`iter_video` yields every frame the FFmpeg decoder returns (the frames OpenCV returns). T is the number of
  decoded frames, not the container's header count: ``no_face.mp4`` announces 98 frames and
  decodes 95. A truncated file whose index (``moov`` atom) sits before the media data opens and
  decodes up to the cut; one whose index sat in the lost half cannot be opened
  (:class:`SourceError`). A shortfall of more than 10% against the header is logged as a warning.
* :func:`iter_frame_folder` yields every frame number of an Aff-Wild2 ``cropped_aligned`` folder
  (``00001.jpg``, ...), with ``None`` where the detector of the dataset authors lost the face and
  wrote no jpg, so that no frame is ever dropped.

Example::

    for frame_index, rgb in iter_video("tests/media/single_face.mp4"):
        pass
    frame_index, rgb.shape
    # (72, (360, 640, 3))
    [i for i, img in iter_frame_folder("cropped_aligned/10-60-1280x720") if img is None]
    # [415, 416]
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import cv2
import numpy as np

log = logging.getLogger(__name__)

# Fewer decoded frames than this share of the header count suggests a cut file. Complete files
# routinely decode a few frames less than announced (edit lists, dropped B-frames).
TRUNCATION_WARN_RATIO = 0.9

FRAME_NAME = re.compile(r"^(\d+)\.jpe?g$", re.IGNORECASE)


class SourceError(ValueError):
    """A video or frame folder that cannot be read; the message is "<path>: <reason>; <fix>"."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says; ``frames_header`` may differ from the decoded count."""

    frames_header: int
    fps: float
    width: int
    height: int


CANNOT_OPEN = (
    "cannot be opened as a video (not a video, or truncated before its index); "
    "check the file with ffprobe and download it again"
)


def _check_file(path: str | Path) -> None:
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file; check the manifest's media path or DATA_ROOT")
    if not path.is_file():
        raise SourceError(f"{path}: not a file; point the manifest at a video file")
    if path.stat().st_size == 0:
        raise SourceError(f"{path}: empty file (0 bytes); download or copy the video again")


def _open(path: str | Path, threads: int) -> cv2.VideoCapture:
    _check_file(path)
    params = [cv2.CAP_PROP_N_THREADS, threads] if threads > 0 else []
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    if not capture.isOpened():
        capture.release()
        raise SourceError(f"{path}: {CANNOT_OPEN}")
    return capture


def probe_video(path: str | Path) -> VideoInfo:
    """Reads the container header of a video without decoding it.

    Args:
        path: the video file.

    Returns:
        A :class:`VideoInfo`. ``frames_header`` is what the container announces; only
        :func:`iter_video` knows how many frames really decode.

    Raises:
        SourceError: missing, empty or unopenable file.

    Example:

    >>> probe_video("tests/media/no_face.mp4")
    VideoInfo(frames_header=98, fps=23.67..., width=960, height=540)
    """
    capture = _open(path, threads=1)
    try:
        return VideoInfo(
            frames_header=int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
            fps=float(capture.get(cv2.CAP_PROP_FPS)),
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        capture.release()


def iter_video(path: str | Path, threads: int = 1, audio: AudioSink | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Decodes a video one frame at a time (PyAV: FFmpeg's decoders, the frames OpenCV returns).

    The file is opened (and checked) on the first ``next()``, as for any generator. The frames are
    OpenCV's, byte for byte (tests/test_sources.py): BT.601 colour conversion and the container's
    rotation applied, so caches made before PyAV decoded them stay valid.

    Args:
        path: the video file.
        threads: FFmpeg decoder threads. 1 (the default) suits one decoding worker per core;
            0 lets FFmpeg choose.
        audio: an :class:`AudioSink` that gets the audio stream's packets and every frame's time
            from this same pass, so that a video read for its faces is not read again for its sound
            (``extract.audio_pass``); None: the audio packets are not even read.

    Yields:
        ``(frame_index, rgb)``: 1-based frame number and an RGB ``uint8`` array ``[H, W, 3]``,
        for every frame the decoder returns, in order, until it returns none.

    Raises:
        SourceError: missing, empty or unopenable file, or not a single decodable frame.

    Example:

    >>> sum(1 for _ in iter_video("tests/media/no_face.mp4"))
    95
    """
    import av

    _check_file(path)
    try:
        container = av.open(str(path))
    except av.error.FFmpegError:
        raise SourceError(f"{path}: {CANNOT_OPEN}") from None
    decoded = 0
    with container:
        if not container.streams.video:
            raise SourceError(f"{path}: no video stream (audio only?); point the manifest at a video file")
        stream = container.streams.video[0]
        frames_header = stream.frames
        stream.thread_type = "AUTO" if threads != 1 else "NONE"
        if threads > 1:
            stream.codec_context.thread_count = threads
        sound = container.streams.audio[0] if audio is not None and container.streams.audio else None
        if audio is not None:
            audio.open(sound)
        to_rgb = _Rgb()
        for frame in _decoded(path, container, stream, sound, audio):
            decoded += 1
            if audio is not None:
                audio.frame_at(float(frame.pts * frame.time_base) if frame.pts is not None else None)
            yield decoded, to_rgb(frame)
    _check_count(path, decoded, frames_header)


class AudioSink(Protocol):
    """What :func:`iter_video` feeds from its pass: the audio stream (None: the file has none), its
    packets in file order, and each decoded video frame's start time in seconds."""

    def open(self, stream) -> None: ...

    def packet(self, packet) -> None: ...

    def frame_at(self, seconds: float | None) -> None: ...


def _decoded(path, container, stream, sound, audio):
    """The video frames of one demux pass; audio packets go to ``audio`` on the way.

    A packet the decoder refuses (a cut file's last one, a damaged one) is skipped, as OpenCV does,
    and the frames the decoder still holds come out at the end.
    """
    import av

    try:
        for packet in container.demux(*([stream, sound] if sound is not None else [stream])):
            if packet.stream is sound:
                audio.packet(packet)
                continue
            try:
                yield from packet.decode()
            except av.error.InvalidDataError:
                log.debug("%s: a video packet at %s does not decode; skipped", path, packet.pts)
    except av.error.FFmpegError as err:
        log.warning("%s: reading stopped at a damaged part (%s); every frame before it is kept", path, err)


class _Rgb:
    """A decoded frame as OpenCV returns it: BT.601 colours whatever the stream says, turned upright.

    One converter per video: ``VideoFrame.reformat`` builds a new one per call, 3x slower."""

    def __init__(self):
        from av.video.reformatter import VideoReformatter

        self.reformatter = VideoReformatter()

    def __call__(self, frame) -> np.ndarray:
        # Same size in and out: the interpolation changes no pixel, and the fast one is the cheapest.
        rgb = self.reformatter.reformat(
            frame, format="rgb24", src_colorspace="ITU601", interpolation="FAST_BILINEAR"
        ).to_ndarray()
        turns = round((frame.rotation or 0) / 90) % 4
        return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _check_count(path, decoded: int, frames_header: int) -> None:
    if decoded == 0:
        raise SourceError(
            f"{path}: the decoder returned no frame (corrupt or zero-length stream); "
            "check the file with ffprobe and download it again"
        )
    if decoded < TRUNCATION_WARN_RATIO * frames_header:
        log.warning(
            "%s: decoded %d of the %d frames the header announces; the file may be truncated "
            "(every decoded frame is kept)",
            path,
            decoded,
            frames_header,
        )


def frame_numbers(folder: str | Path) -> dict[int, Path]:
    """Maps 1-based frame number to jpg path for a frame folder (``00001.jpg`` -> 1).

    Files whose name is not digits + ``.jpg``/``.jpeg`` are ignored.

    Raises:
        SourceError: missing folder, or no frame jpg in it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"{folder}: no such frame folder; check the manifest's frames_dir or DATA_ROOT")
    frames = {}
    for path in folder.iterdir():
        match = FRAME_NAME.match(path.name)
        if match:
            frames[int(match.group(1))] = path
    if not frames:
        raise SourceError(
            f"{folder}: no frame images named like 00001.jpg; point frames_dir at a cropped_aligned video folder"
        )
    if 0 in frames:
        raise SourceError(f"{frames[0]}: frame numbers are 1-based; rename the files from 00001.jpg on")
    return frames


def _read_jpg(path: Path) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)
    # libjpeg only warns on a cut file and returns a grey-filled image: insist on the end marker.
    # Some writers pad after it, hence the search in the last bytes instead of an exact suffix.
    tail = data[-64:].tobytes()
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    is_jpeg = data[:2].tobytes() == b"\xff\xd8"
    if bgr is None and not is_jpeg:
        raise SourceError(
            f"{path}: not an image ({'empty file' if not data.size else 'no JPEG or other image header'}); "
            "replace it, or delete it so that the frame counts as a frame without a face"
        )
    if bgr is None or (is_jpeg and b"\xff\xd9" not in tail):  # another format under a .jpg name decodes as is
        raise SourceError(
            f"{path}: not a decodable JPEG (corrupt or truncated); replace it, or delete it so that "
            "the frame counts as a frame without a face"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def iter_frame_folder(folder: str | Path, n_frames: int = 0) -> Iterator[tuple[int, np.ndarray | None]]:
    """Reads a pre-cropped frame folder (Aff-Wild2 ``cropped_aligned``) one frame at a time.

    Args:
        folder: the folder of ``00001.jpg``-style images of one video.
        n_frames: the video's frame count when known (from the labels or the video), so that
            frames after the last jpg are yielded too; 0 stops at the highest jpg number.

    Yields:
        ``(frame_index, rgb_or_none)`` for every frame ``1 .. max(n_frames, highest jpg number)``:
        the RGB ``uint8`` image, or ``None`` where the jpg is missing (no face in that frame).

    Raises:
        SourceError: missing or empty folder, or a jpg that does not decode (named in the message).

    Example::

        list((i, img is None) for i, img in iter_frame_folder(folder, n_frames=4))
        # [(1, False), (2, True), (3, False), (4, True)]
    """
    frames = frame_numbers(folder)
    last = max(n_frames, max(frames))
    for frame_index in range(1, last + 1):
        path = frames.get(frame_index)
        yield frame_index, None if path is None else _read_jpg(path)
