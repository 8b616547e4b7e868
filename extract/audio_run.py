"""``make extract AUDIO=<extractor>``: every sample's audio, pooled per video frame, into
``<cache_dir>/<dataset>/audio-<extractor>.h5``.

The file is a feature cache like the visual ones (``extract.cache``: the same groups, shards, merge
and lock), read with the same ``CacheReader``; for audio, ``embeddings`` holds the per-frame mean
then std of the extractor's 10 ms rows, ``face_mask`` says where audio exists, and ``score`` is the
number of rows pooled into the frame (docs/cache_format.md, "Audio caches"). One row per video frame,
with the visual cache's 1-based ``frame_index``, so stage two joins the two by frame number.

Each video is one job in a process pool; a job writes its subjects' shards as it ends, so a killed
run keeps every finished video and a rerun does only the rest.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from extract.cache import (
    CacheLock,
    CacheMeta,
    CacheReader,
    VideoWriter,
    audio_cache_name,
    cache_path,
    merge_shards,
    parts_dir_for,
    summary_path,
)

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0  # frames folders without a video: the manifest's fps option, else this
WRITE_ROWS = 4096


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
    """Extracts one recording into its subjects' shards; returns its counts, or its one-line error."""
    from extract.audio import Pool, Rows, audio_spec, frame_edges, iter_audio, video_frame_edges
    from extract.fingerprint import fingerprint
    from extract.sources import SourceError

    start = time.perf_counter()
    try:
        edges = video_frame_edges(job.timeline) if job.timeline else frame_edges(job.n_frames, job.fps)
        spec = audio_spec(name)
        pool, rows, samples = Pool(edges, spec.dim), Rows(spec), 0
        for first, block in iter_audio(job.source):
            samples += len(block)
            pool.add(*rows.add(first, block))
        pool.add(*rows.finish())
    except SourceError as err:
        return {"error": str(err), "source": job.source}
    features, mask = pool.result()
    for sample_id in job.subjects:
        writer = VideoWriter(parts, sample_id, meta, source=job.source, fingerprint=fingerprint(job.source))
        for lo in range(0, len(mask), WRITE_ROWS):
            hi = min(lo + WRITE_ROWS, len(mask))
            n = hi - lo
            writer.append(features[lo:hi], np.arange(lo + 1, hi + 1), mask[lo:hi], np.zeros((n, 4)), pool.count[lo:hi])
        writer.close()
    return {
        "source": job.source,
        "frames": len(mask),
        "with_audio": int(mask.sum()),
        "audio_seconds": samples / 16_000,
        "video_seconds": float(edges[-1] - edges[0]),
        "seconds": time.perf_counter() - start,
    }


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
    from extract.audio import check_audio_name
    from extract.cache import shard_video_ids

    start = time.perf_counter()
    check_audio_name(cfg.audio)  # a one-line error listing the valid names
    meta = audio_meta(cfg.audio)
    out = cache_path(cfg.cache_dir, cfg.dataset, meta.backbone)
    parts = parts_dir_for(out)
    with CacheLock(out):
        merge_shards(out, parts, meta)  # the videos an interrupted run finished
        done = (set(CacheReader(out).video_ids()) if out.is_file() else set()) | shard_video_ids(parts)
        jobs, missing = audio_jobs(table, done, fps or DEFAULT_FPS)
        summary = {"cache": str(out), "audio": cfg.audio, "samples": int(len(table)), "missing_input": missing}
        summary.update(skipped_done=len(done & set(table.sample_id)), done=0, failed=[], frames=0, with_audio=0)
        summary.update(audio_seconds=0.0, warnings=[])
        if jobs:
            _run_jobs(cfg, jobs, meta, parts, summary, workers or cfg.workers)
        merge_shards(out, parts, meta)
    seconds = time.perf_counter() - start
    summary["seconds"] = round(seconds, 2)
    summary["x_real_time"] = round(summary["audio_seconds"] / seconds, 1) if seconds else 0.0
    if jobs or not summary_path(out).exists():  # a run with nothing to do keeps the last real summary
        summary_path(out).write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary


def _run_jobs(cfg, jobs: list[AudioJob], meta: CacheMeta, parts: Path, summary: dict, workers: int) -> None:
    import os

    workers = min(len(jobs), workers or os.cpu_count() or 1)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_job, job, cfg.audio, meta, str(parts)): job for job in jobs}
        for future in as_completed(futures):
            job, result = futures[future], future.result()
            if "error" in result:
                summary["failed"].append({"path": job.source, "reason": result["error"]})
                log.error("failed: %s", result["error"])
                continue
            summary["done"] += len(job.subjects)
            summary["frames"] += result["frames"]
            summary["with_audio"] += result["with_audio"]
            summary["audio_seconds"] = round(summary["audio_seconds"] + result["audio_seconds"], 3)
            warning = _warn(result)
            if warning:
                log.warning("%s", warning)
                summary["warnings"].append(warning)
