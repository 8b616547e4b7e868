"""Stage one's CPU side: decode frames, find the face of each subject, cut model-ready crops.

Each worker process runs :func:`worker_main`: it takes :class:`Job` s from a queue and sends back
small :class:`Rows` messages (at most ``chunk`` frames, uint8 crops at the backbone's input size),
so no process ever holds a whole video. The worker never imports Keras: the one inference loop in
the main process owns the model and batches crops from every worker.
"""

from __future__ import annotations

import logging
import queue as queue_lib
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subject:
    """One cache group filled from a job: ``side`` picks the face in two-subject videos."""

    sample_id: str
    side: str = ""


@dataclass(frozen=True)
class Job:
    """One decode pass: a raw video (every subject in it at once) or one pre-cropped frame folder."""

    job_id: int
    mode: str  # "video" or "frames"
    path: str
    subjects: tuple[Subject, ...]
    n_frames: int = 0  # frames mode: the labelled frame count, so trailing face-less frames keep rows
    audio: object = None  # video mode: an ``extract.audio_pass.AudioTask``, the audio of this same decode pass


@dataclass(frozen=True)
class FaceSettings:
    """What the workers need to know; everything here is recorded in the cache's ``detector`` attribute."""

    input_size: tuple[int, int, int]
    detector: str = "full+short"
    min_score: float = 0.5
    margin: float = 0.25
    align: bool = False
    chunk: int = 64
    detect_every: int = 1
    save_crops: int = 0  # side of the JPEG crops saved for fine-tuning (extract.crops); 0: none

    def describe(self, mode: str) -> str:
        if mode == "frames":
            return "dataset crops (cropped_aligned); a missing jpg is a frame without a face"
        text = f"blazeface-{self.detector} min_score={self.min_score} margin={self.margin} align={self.align}"
        if self.detect_every > 1:
            text += f" detect_every={self.detect_every} (keyframes; faces interpolated between keyframes that agree)"
        return text


@dataclass
class Rows:
    """Consecutive frames of one subject; ``crops`` holds one image per True in ``face_mask``."""

    job_id: int
    sample_id: str
    frame_index: np.ndarray
    face_mask: np.ndarray
    bbox: np.ndarray
    score: np.ndarray
    crops: np.ndarray
    jpegs: list = field(default_factory=list)  # SAVE_CROPS: one JPEG (uint8 bytes) per face, in order
    ring: tuple | None = None  # (worker, slot, count): the crops wait in that worker's shared-memory ring


@dataclass
class JobDone:
    job_id: int
    frames: int
    detected: int = 0  # frames the face detector ran on (fewer than ``frames`` with keyframes)
    first_frame_at: float = 0.0  # time.time() when the job's first frame was decoded (start-up figures)
    tiny: tuple[int, ...] = ()  # frames whose face (crop or box) was under MIN_FACE_SIDE pixels: kept face-less
    audio: dict | None = None  # the job's audio (``AudioPass.finish``): counts, or {"error": ...}


# A face crop or box narrower than this has no face in it a backbone could read (a 1x1 "crop" upscaled
# to 64x64 is one flat colour): the frame keeps its row, without a face, and the run says so.
MIN_FACE_SIDE = 8


@dataclass
class JobFailed:
    job_id: int
    reason: str


@dataclass
class _Buffer:
    """Rows of one subject not yet sent."""

    sample_id: str
    index: list = field(default_factory=list)
    mask: list = field(default_factory=list)
    bbox: list = field(default_factory=list)
    score: list = field(default_factory=list)
    crops: list = field(default_factory=list)
    jpegs: list = field(default_factory=list)

    def add(self, frame_index, crop, box, score, jpeg=None) -> None:
        self.index.append(frame_index)
        self.mask.append(crop is not None)
        self.bbox.append(box if box is not None else np.zeros(4, np.float32))
        self.score.append(score)
        if crop is not None:
            self.crops.append(crop)
        if jpeg is not None:
            self.jpegs.append(jpeg)

    def take(self, job_id: int, input_size) -> Rows:
        rows = Rows(
            job_id=job_id,
            sample_id=self.sample_id,
            frame_index=np.asarray(self.index, np.int32),
            face_mask=np.asarray(self.mask, np.bool_),
            bbox=np.asarray(self.bbox, np.float32).reshape(-1, 4),
            score=np.asarray(self.score, np.float32),
            crops=(np.stack(self.crops) if self.crops else np.zeros((0, *input_size), np.uint8)),
            jpegs=self.jpegs,
        )
        self.index, self.mask, self.bbox, self.score, self.crops, self.jpegs = [], [], [], [], [], []
        return rows


@dataclass
class JobStats:
    """What a job's rows do not carry, counted while they are made: frames decoded, frames the
    detector ran on, when the first frame came, the frames whose face was too small."""

    frames: int = 0
    detected: int = 0
    first: float = 0.0
    tiny: list = field(default_factory=list)
    audio: dict | None = None

    def message(self, job: Job) -> "JobDone | JobFailed":
        if self.frames == 0:
            return JobFailed(job.job_id, f"{job.path}: no frames; check the file or folder")
        return JobDone(job.job_id, self.frames, self.detected, self.first, tuple(self.tiny), self.audio)


def job_rows(job: Job, settings: FaceSettings, detector, stats: JobStats) -> Iterator[Rows]:
    """A job's :class:`Rows`, at most ``settings.chunk`` frames each, counting into ``stats``; the
    local workers send them through a queue, the Ray engine yields them (``extract.ray_engine``).
    ``detector``: a ``FaceDetector`` (video mode) or None (frames mode)."""
    if job.mode == "frames":
        return _run_frames(job, settings, stats)
    return _run_video(job, settings, detector, stats)


def _run_frames(job: Job, settings: FaceSettings, stats: JobStats) -> Iterator[Rows]:
    from extract.backbones import to_model_input
    from extract.sources import iter_frame_folder

    (subject,) = job.subjects
    buf = _Buffer(subject.sample_id)
    for frame_index, image in iter_frame_folder(job.path, job.n_frames):
        stats.first = stats.first or time.time()
        if image is not None and min(image.shape[:2]) < MIN_FACE_SIDE:
            stats.tiny.append(frame_index)
            image = None
        if image is None:
            buf.add(frame_index, None, None, 0.0)
        else:
            h, w = image.shape[:2]
            box = np.array([0, 0, w, h], np.float32)
            buf.add(frame_index, to_model_input(image, settings.input_size), box, 1.0)
        stats.frames += 1
        stats.detected += 1
        if len(buf.index) >= settings.chunk:
            yield buf.take(job.job_id, settings.input_size)
    if buf.index:
        yield buf.take(job.job_id, settings.input_size)


def _run_video(job: Job, settings: FaceSettings, detector, stats: JobStats) -> Iterator[Rows]:
    from extract.keyframes import KeyframeDetector
    from extract.sources import iter_video

    faces = KeyframeDetector(detector, settings.detect_every)  # one per video: its first frame is a keyframe
    sound = None
    if job.audio is not None:
        from extract.audio_pass import AudioPass

        sound = AudioPass(job.audio, job.path)  # the audio of this same pass: the video is decoded once
    trackers = [_Subject(s, job.job_id, settings) for s in job.subjects]
    try:
        for frame_index, frame, detections in faces.stream(_stamped(iter_video(job.path, audio=sound), stats)):
            for subject in trackers:
                subject.add(frame_index, frame, detections, stats)
            stats.frames += 1
            if len(trackers[0].buf.index) >= settings.chunk:
                yield from (subject.take() for subject in trackers)
        yield from (subject.take() for subject in trackers if subject.buf.index)
    finally:
        if sound is not None and stats.audio is None:
            stats.audio = sound.finish() if stats.frames and sys.exc_info()[0] is None else sound.abort()
    stats.detected = faces.stats["detected"]


def _stamped(frames: Iterator, stats: JobStats) -> Iterator:
    """``frames``, noting in ``stats`` when the first one was decoded (the start-up figures)."""
    for item in frames:
        stats.first = stats.first or time.time()
        yield item


class _Subject:
    """One subject of a video job: its tracker and the buffer of its rows not yet sent."""

    def __init__(self, subject: Subject, job_id: int, settings: FaceSettings):
        from extract.backbones import to_model_input
        from extract.faces import SubjectTracker

        self.tracker, self.buf = SubjectTracker(side=subject.side), _Buffer(subject.sample_id)
        self.job_id, self.settings, self.to_model_input = job_id, settings, to_model_input

    def add(self, frame_index: int, frame: np.ndarray, detections, stats: JobStats) -> None:
        det = self.tracker.update(detections, frame.shape[1])
        if det is not None and min(det.box[2] - det.box[0], det.box[3] - det.box[1]) < MIN_FACE_SIDE:
            stats.tiny.append(frame_index)
            det = None
        if det is None:
            self.buf.add(frame_index, None, None, 0.0)
            return
        crop, jpeg = _cut(frame, det, self.settings)
        self.buf.add(frame_index, self.to_model_input(crop, self.settings.input_size), det.box, float(det.score), jpeg)

    def take(self) -> Rows:
        return self.buf.take(self.job_id, self.settings.input_size)


def _cut(frame, det, settings: FaceSettings):
    """The model crop of a detected face and, with SAVE_CROPS, its JPEG at the saved side."""
    from extract.crops import encode_jpeg
    from extract.faces import crop_face

    height, width = settings.input_size[:2]
    crop = crop_face(frame, det, size=(height, width), margin=settings.margin, align=settings.align)
    if not settings.save_crops:
        return crop, None
    side = (settings.save_crops, settings.save_crops)
    saved = (
        crop
        if side == crop.shape[:2]
        else crop_face(frame, det, size=side, margin=settings.margin, align=settings.align)
    )
    return crop, encode_jpeg(saved)


def make_detector(settings: FaceSettings):
    """The BlazeFace detector of ``settings`` (LiteRT interpreters: frames mode never calls this)."""
    from extract.faces import FaceDetector

    return FaceDetector(model=settings.detector, min_score=settings.min_score)


def worker_main(jobs, results, warm_up_detector: bool, worker: int = 0, free=None, warm_up_audio: str = "") -> None:
    """Process entry point: runs ``(FaceSettings, Job)`` pairs until it reads ``None``.

    Workers start before the main process has loaded the backbone (which fixes the crop size), so
    the slow imports on both sides overlap; the settings travel with each job. With a ``free``
    queue, crops go through this worker's shared-memory ring (``extract.transport``).
    A job that fails sends :class:`JobFailed` with the reason and the worker goes on with the next:
    one bad file never stops the others.
    """
    from extract import worker_env  # noqa: F401  (no TensorFlow, one thread: before numpy and OpenCV)
    from extract.sources import SourceError
    from extract.transport import RingSender

    send = RingSender(worker, free, results) if free is not None else results.put
    if warm_up_detector:
        from extract import blazeface  # noqa: F401  (LiteRT's import: paid while the model loads)
    if warm_up_audio:  # the audio of the decode pass (extract.audio_pass): its imports, now as well
        from extract.audio import warm_up

        warm_up(warm_up_audio)
    detector = None
    while True:
        try:
            item = jobs.get(timeout=5)
        except queue_lib.Empty:
            continue
        if free is not None:
            send.attach()  # the ring exists once work is queued: map it now, so that its name can go
        if item is None:
            break
        settings, job = item
        try:
            if job.mode == "video" and detector is None:
                detector = make_detector(settings)
            stats = JobStats()
            for rows in job_rows(job, settings, detector, stats):
                send(rows)
            results.put(stats.message(job))
        except SourceError as err:
            results.put(JobFailed(job.job_id, str(err)))
        except Exception as err:  # reported with its traceback, never swallowed: the run's exit code says so
            log.debug("job %s failed:\n%s", job.path, traceback.format_exc())
            results.put(JobFailed(job.job_id, f"{job.path}: {type(err).__name__}: {err}"))
    if detector is not None:
        detector.close()
    if free is not None:
        send.close()
