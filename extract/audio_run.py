"""``make extract AUDIO=<extractor>``: every sample's audio, pooled per video frame, into
``<cache_dir>/<dataset>/audio-<extractor>.h5``.

The file is a feature cache like the visual ones (``extract.cache``: the same groups, shards, merge
and lock), read with the same ``CacheReader``; for audio, ``embeddings`` holds the per-frame mean
then std of the extractor's 10 ms rows, ``face_mask`` says where audio exists, and ``score`` is the
number of rows pooled into the frame (docs/cache_format.md, "Audio caches"). One row per video frame,
with the visual cache's 1-based ``frame_index``, so stage two joins the two by frame number.

With ``BACKBONE=`` in video mode the video workers extract the audio of each video in the pass that
decodes its frames (``extract.audio_pass``), so each video is read once; the other recordings (a
dataset's WAV files, frames mode, a ``file:`` model, which needs Keras) are jobs in a
process pool of this run's own. Every job writes its subjects' shards, so a killed run keeps every
finished video and a rerun does only the rest.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing as mp
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from extract.cache import (
    CacheLock,
    CacheMeta,
    CacheReader,
    audio_cache_name,
    cache_path,
    merge_shards,
    parts_dir_for,
    summary_path,
)

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0  # frames folders without a video: the manifest's fps option, else this


@dataclass(frozen=True)
class AudioJob:
    """One recording: where its audio is read, whose frames the rows follow, and the samples it fills."""

    source: str  # a WAV of the dataset, or the video itself
    timeline: str  # the video whose frames the rows follow; '' : n_frames frames at fps
    n_frames: int
    fps: float
    subjects: tuple[str, ...]


def audio_meta(name: str) -> CacheMeta:
    from extract.audio import HOP, SAMPLE_RATE, WINDOW, audio_spec

    spec = audio_spec(name)
    return CacheMeta(
        backbone=audio_cache_name(name),
        embedding_dim=2 * spec.dim,
        input_size=(SAMPLE_RATE, WINDOW, HOP),
        preprocessing=f"{SAMPLE_RATE} Hz mono (FFmpeg's resampler through PyAV)",
        weights_sha256=dict(spec.extra).get("weights_sha256", ""),
        face_policy="no audio: row kept, face_mask=False, embedding zeros, score 0",
        detector=f"audio {spec.describe}; pooled per video frame: mean then std of the rows starting in it",
        extra={
            "modality": "audio",
            "extractor": name,
            "sample_rate": SAMPLE_RATE,
            "window": WINDOW,
            "hop": HOP,
            "pooling": "mean+std of the rows whose start falls in [t, t + 1/fps)",
            "row_dim": spec.dim,
            **dict(spec.extra),
        },
    )


def audio_jobs(table, done: set[str], fps: float) -> tuple[list[AudioJob], list[str]]:
    """One job per recording (the subjects of a two-person video share it), and the samples without audio input."""
    jobs: dict[tuple, list] = {}
    missing = []
    for row in table.itertuples(index=False):
        if row.sample_id in done:
            continue
        source = row.audio_path or row.media_path
        if not source:
            missing.append(f"{row.sample_id}: no audio file and no video for '{row.video}'")
            continue
        key = (source, row.media_path, int(row.n_frames))
        jobs.setdefault(key, []).append(row.sample_id)
    out = [AudioJob(src, video, n, fps, tuple(ids)) for (src, video, n), ids in jobs.items()]
    return out, missing


def run_job(job: AudioJob, name: str, meta: CacheMeta, parts: str) -> dict:
    """Extracts one recording into its subjects' shards, streamed (``extract.audio.FramePool``,
    ``extract.audio_pass.ShardOut``); returns its counts, or its one-line error."""
    from extract.audio import FramePool, Rows, audio_spec, frame_edges, iter_audio, video_frame_edges
    from extract.audio_pass import ShardOut
    from extract.sources import SourceError

    start = time.perf_counter()
    out = None
    try:
        edges = video_frame_edges(job.timeline) if job.timeline else frame_edges(job.n_frames, job.fps)
        spec = audio_spec(name)
        pool, rows, samples = FramePool(spec.dim), Rows(spec), 0
        pool.frames(edges[:-1])
        pool.frames_done(float(edges[-1]))
        out = ShardOut(parts, job.subjects, meta, job.source)
        for first, block in iter_audio(job.source):
            samples += len(block)
            pool.add(*rows.add(first, block))
            out.add(*pool.take())
        pool.add(*rows.finish())
    except SourceError as err:
        if out is not None:
            out.abort()
        return {"error": str(err), "source": job.source}
    pool.audio_done()
    out.add(*pool.take())
    out.close()
    return out.result(job.source, samples, edges[-1] - edges[0], start)


def _warn(result: dict) -> str:
    """The warning a finished recording deserves, or ''."""
    if result["with_audio"] == 0:
        return f"{result['source']}: no audio stream; its {result['frames']} frames are kept, all without audio"
    short = result["video_seconds"] - result["audio_seconds"]
    if short > 1.0:
        return (
            f"{result['source']}: the audio is {short:.1f} s shorter than the video "
            f"({result['audio_seconds']:.1f} s against {result['video_seconds']:.1f} s); "
            f"{result['frames'] - result['with_audio']} frames have no audio"
        )
    return ""


def run_audio(cfg, table, fps: float | None = None, workers: int = 0) -> dict:
    """Extracts ``cfg.audio`` for every sample of ``table`` not yet in its audio cache; returns the summary.

    ``workers``: processes (0: ``cfg.workers``, and 0 there: one per core)."""
    with AudioRun(cfg, table, fps, workers) as run:
        run.start()
    return run.summary


class AudioRun:
    """One run's audio cache, locked from ``__enter__`` to ``__exit__`` (which merges the shards and
    writes the summary). Each recording is extracted either by the video worker that decodes its
    faces (:meth:`attach`: the video is decoded once, ``extract.audio_pass``) or by a process of this
    run's own (:meth:`start`: WAV files, frames mode, a ``file:`` model)."""

    def __init__(self, cfg, table, fps: float | None = None, workers: int = 0):
        from extract.audio import check_audio_name

        check_audio_name(cfg.audio)  # a one-line error listing the valid names
        self.cfg, self.table, self.fps, self.workers = cfg, table, fps or DEFAULT_FPS, workers or cfg.workers
        self.meta = audio_meta(cfg.audio)
        self.out = cache_path(cfg.cache_dir, cfg.dataset, self.meta.backbone)
        self.parts = parts_dir_for(self.out)
        self.lock = CacheLock(self.out)
        self.in_pass: dict[str, AudioJob] = {}
        self.side = None
        self.side_error: Exception | None = None
        self.lock_held = threading.Lock()  # results come from the side thread and the job loop

    def __enter__(self) -> "AudioRun":
        from extract.cache import shard_video_ids

        self.started = time.perf_counter()
        self.lock.__enter__()
        merge_shards(self.out, self.parts, self.meta)  # the videos an interrupted run finished
        done = (set(CacheReader(self.out).video_ids()) if self.out.is_file() else set()) | shard_video_ids(self.parts)
        self.jobs, missing = audio_jobs(self.table, done, self.fps)
        summary = {"cache": str(self.out), "audio": self.cfg.audio, "samples": int(len(self.table))}
        summary.update(missing_input=missing, skipped_done=len(done & set(self.table.sample_id)), done=0, failed=[])
        summary.update(frames=0, with_audio=0, audio_seconds=0.0, warnings=[], decoded_with_video=0)
        self.summary = summary
        return self

    def attach(self, video_jobs: list) -> list:
        """``video_jobs`` (``extract.worker.Job``), those whose file is also a recording to extract
        carrying its :class:`extract.audio_pass.AudioTask`; that recording leaves this run's own jobs."""
        from extract.audio import in_worker
        from extract.audio_pass import AudioTask

        if not in_worker(self.cfg.audio):
            return video_jobs
        own = {job.source: job for job in self.jobs if job.source == job.timeline}
        out = []
        for job in video_jobs:
            recording = own.pop(job.path, None) if job.mode == "video" else None
            if recording is None:
                out.append(job)
                continue
            self.in_pass[job.path] = recording
            task = AudioTask(self.cfg.audio, str(self.parts), recording.subjects, self.meta)
            out.append(dataclasses.replace(job, audio=task))
        self.jobs = [job for job in self.jobs if job.source not in self.in_pass]
        return out

    def start(self) -> None:
        """Extracts the recordings no video worker took, in a thread of the caller (processes of its own)."""
        if self.jobs:
            self.side = threading.Thread(target=self._run_jobs, name="audio", daemon=True)
            self.side.start()

    def record(self, path: str, result: dict) -> None:
        """A recording's result (``run_job``'s, or a video worker's), folded into the summary."""
        recording = self.in_pass.get(path)
        with self.lock_held:
            if "error" in result:
                self.summary["failed"].append({"path": result.get("source", path), "reason": result["error"]})
                log.error("failed: %s", result["error"])
                return
            subjects = recording.subjects if recording is not None else result["subjects"]
            self.summary["done"] += len(subjects)
            self.summary["decoded_with_video"] += len(subjects) if recording is not None else 0
            self.summary["frames"] += result["frames"]
            self.summary["with_audio"] += result["with_audio"]
            self.summary["audio_seconds"] = round(self.summary["audio_seconds"] + result["audio_seconds"], 3)
            warning = _warn(result)
            if warning:
                log.warning("%s", warning)
                self.summary["warnings"].append(warning)

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if self.side is not None:
                self.side.join()
            if self.side_error is not None:
                raise self.side_error
            merge_shards(self.out, self.parts, self.meta)
            seconds = time.perf_counter() - self.started
            self.summary["seconds"] = round(seconds, 2)
            self.summary["x_real_time"] = round(self.summary["audio_seconds"] / seconds, 1) if seconds else 0.0
            worked = self.jobs or self.in_pass
            if exc_type is None and (worked or not summary_path(self.out).exists()):
                summary_path(self.out).write_text(json.dumps(self.summary, indent=2, sort_keys=True))
        finally:
            self.lock.__exit__(exc_type, *exc)

    def _run_jobs(self) -> None:
        try:
            self._run_pool()
        except Exception as err:  # raised again in __exit__, in the caller's thread
            self.side_error = err

    def _run_pool(self) -> None:
        import os

        workers = min(len(self.jobs), self.workers or os.cpu_count() or 1)
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(run_job, job, self.cfg.audio, self.meta, str(self.parts)) for job in self.jobs]
            for job, future in zip(self.jobs, futures):
                self.record(job.source, {**future.result(), "subjects": job.subjects})
