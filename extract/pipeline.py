"""Stage one: a dataset's samples -> worker processes (decode, detect, crop) -> one batched
inference loop -> per-video shards -> the HDF5 cache.

Read top to bottom: :class:`ExtractConfig`, :func:`plan_jobs` (what is left to do),
:class:`_Batcher` (crops from every worker into fixed-size batches, rows back in order), and
:func:`run_extract` (the loop, resumability, the summary).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import multiprocessing as mp
import os
import queue as queue_lib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from extract.cache import CacheMeta, CacheReader, VideoWriter, cache_path, merge_shards, parts_dir_for, summary_path
from extract.transport import RingAttached
from extract.worker import FaceSettings, Job, JobDone, JobFailed, Rows, Subject, worker_main

log = logging.getLogger(__name__)

INPUT_MODES = ("auto", "frames", "video")
TRANSPORTS = ("shm", "queue")


@dataclass(frozen=True)
class ExtractConfig:
    """Everything a run depends on; saved, resolved, in the run summary beside the cache.

    Args:
        dataset: a registered dataset name (``data_manifests.loader.DATASETS``).
        data_root: where the dataset lives.
        backbone: a ``BACKBONES`` name or ``file:<model.keras>``.
        input: ``frames`` (pre-cropped folders), ``video`` (decode and detect), or ``auto``
            (the manifest's default).
        workers: decode/detect processes; 0 means one per core.
        batch: crops per inference call (every call has this shape: the last one is padded).
        detect_every: video mode: run the face detector every this many frames and carry the faces
            between them with optical flow (``extract.keyframes``); 1: detect on every frame.
        save_crops: video mode: also store every face crop, JPEG-encoded, in the sibling
            ``<backbone>.crops.h5`` (``extract.crops``), for fine-tuning. crop_size: their side.
        transport: how crops reach the inference loop: ``shm`` (a shared-memory ring per worker,
            ``extract.transport``) or ``queue`` (pickled with the message).
    """

    dataset: str = "synthetic"
    data_root: str = "data/synthetic"
    backbone: str = "fer"
    weights: str = ""
    embedding_layer: str = ""
    cache_dir: str = "cache"
    input: str = "auto"
    detector: str = "full+short"
    min_score: float = 0.5
    margin: float = 0.25
    align: bool = False
    detect_every: int = 1
    save_crops: bool = False
    crop_size: int = 112
    transport: str = "shm"
    workers: int = 0
    batch: int = 256
    chunk: int = 64
    precision: str = "auto"
    limit: int = 0


def plan_jobs(samples, mode: str, done: set[str]) -> tuple[list[Job], list[str]]:
    """Jobs for every sample not yet in the cache, and the samples that lack this mode's input.

    In video mode the subjects of one video (``_left``/``_right``) share a job, so a video is
    decoded once.
    """
    jobs, missing = [], []
    by_video: dict[str, list] = collections.defaultdict(list)
    for row in samples.itertuples(index=False):
        if row.sample_id in done:
            continue
        if mode == "frames":
            if not row.frames_dir:
                missing.append(f"{row.sample_id}: no cropped frames folder")
                continue
            jobs.append(Job(len(jobs), "frames", row.frames_dir, (Subject(row.sample_id),), int(row.n_frames)))
        else:
            if not row.media_path:
                missing.append(f"{row.sample_id}: no video file found for '{row.video}'")
                continue
            by_video[row.media_path].append(Subject(row.sample_id, row.side or ""))
    for path, subjects in by_video.items():
        jobs.append(Job(len(jobs), "video", path, tuple(subjects)))
    return jobs, missing


def _estimate_frames(job: Job) -> int:
    if job.mode == "frames":
        return job.n_frames
    from extract.sources import SourceError, probe_video

    try:
        return probe_video(job.path).frames_header
    except SourceError:
        return 0  # the worker reports the failure with its reason


class _Batcher:
    """Collects crops from many videos into batches and hands back each subject's rows in order."""

    def __init__(self, backbone, batch: int):
        self.backbone = backbone
        self.batch = batch
        self.crops: collections.deque = collections.deque()  # (pending, row position, crop)
        self.pending: dict[str, collections.deque] = collections.defaultdict(collections.deque)

    def add(self, rows: Rows) -> None:
        emb = np.zeros((len(rows.frame_index), self.backbone.embedding_dim), np.float32)
        item = {"rows": rows, "emb": emb, "left": int(rows.face_mask.sum())}
        self.pending[rows.sample_id].append(item)
        for pos, crop in zip(np.flatnonzero(rows.face_mask), rows.crops):
            self.crops.append((item, pos, crop))

    def drop(self, sample_id: str) -> None:
        self.pending.pop(sample_id, None)
        self.crops = collections.deque(c for c in self.crops if c[0]["rows"].sample_id != sample_id)

    def __len__(self) -> int:
        return len(self.crops)

    def run(self) -> None:
        take = [self.crops.popleft() for _ in range(min(self.batch, len(self.crops)))]
        if not take:
            return
        emb = self.backbone.embed(np.stack([c[2] for c in take]))
        for (item, pos, _), vec in zip(take, emb):
            item["emb"][pos] = vec
            item["left"] -= 1

    def ready(self, sample_id: str):
        """Yields the leading rows of a subject whose embeddings are all computed."""
        queue = self.pending.get(sample_id)
        while queue and queue[0]["left"] == 0:
            item = queue.popleft()
            yield item["rows"], item["emb"]

    def idle(self, sample_id: str) -> bool:
        return not self.pending.get(sample_id)


def _meta(backbone, settings: FaceSettings, mode: str) -> CacheMeta:
    import keras

    from extract.faces import FACE_POLICY

    backend = keras.backend.backend()
    backend_module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend, backend)
    version = getattr(__import__(backend_module), "__version__", "")
    return CacheMeta(
        backbone=backbone.name, embedding_dim=backbone.embedding_dim, input_size=tuple(backbone.input_size),
        preprocessing=backbone.preprocessing, weights_sha256=backbone.weights_sha256,
        embedding_layer=backbone.embedding_layer, face_policy=FACE_POLICY, detector=settings.describe(mode),
        keras_version=keras.__version__, backend=backend, backend_version=version,
    )


def run_extract(cfg: ExtractConfig) -> dict:
    """Extracts every sample of ``cfg.dataset`` not yet in the cache; returns the run summary.

    Killed at any moment, a second call finishes only what is missing: finished videos are kept as
    shards and folded in first, half-written ones are discarded and redone.
    """
    from data_manifests.loader import load_dataset, load_manifest, samples
    from extract.backbones import check_name, load_backbone

    start = time.perf_counter()
    if cfg.transport not in TRANSPORTS:
        raise ValueError(f"--transport must be one of {', '.join(TRANSPORTS)}, got {cfg.transport!r}")
    if cfg.detect_every < 1:
        raise ValueError(f"--detect-every must be >= 1 (1: detect on every frame), got {cfg.detect_every}")
    check_name(cfg.backbone)
    manifest = load_manifest(cfg.dataset)
    table = samples(load_dataset(cfg.dataset, cfg.data_root))
    mode = manifest.input if cfg.input == "auto" else cfg.input
    if cfg.save_crops and mode != "video":
        raise ValueError(f"--save-crops stores the crops cut from videos, but {cfg.dataset} is read in '{mode}' "
                         f"mode, whose cropped_aligned frames fine-tuning reads directly; add --input video "
                         f"(INPUT=video) to save crops from the videos")
    if cfg.save_crops and cfg.crop_size < 8:
        raise ValueError(f"--crop-size must be >= 8 pixels, got {cfg.crop_size}")
    with _WorkerPool(cfg.workers or os.cpu_count() or 1, warm_up_detector=mode == "video") as pool:
        backbone = load_backbone(cfg.backbone, weights=cfg.weights or None,
                                 embedding_layer=cfg.embedding_layer or None, precision=cfg.precision)
        return _extract(cfg, pool, backbone, table, mode, start)


def _extract(cfg: ExtractConfig, pool: "_WorkerPool", backbone, table, mode: str, start: float) -> dict:
    backbone.batch_size = cfg.batch
    settings = FaceSettings(input_size=tuple(backbone.input_size), detector=cfg.detector,
                            min_score=cfg.min_score, margin=cfg.margin, align=cfg.align, chunk=cfg.chunk,
                            detect_every=cfg.detect_every, save_crops=cfg.crop_size if cfg.save_crops else 0)
    meta = _meta(backbone, settings, mode)
    out = cache_path(cfg.cache_dir, cfg.dataset, cfg.backbone)
    crops = _Crops(out, meta, cfg.crop_size) if cfg.save_crops else None
    parts = parts_dir_for(out)
    if crops:
        crops.merge()
    recovered = merge_shards(out, parts, meta)
    if recovered:
        log.info("folded %d videos finished by an earlier, interrupted run into %s", len(recovered), out)
    done = set(CacheReader(out).video_ids())
    if crops:  # a video cached without its crops is extracted again
        done &= set(CacheReader(crops.path).video_ids())
    jobs, missing = plan_jobs(table, mode, done)
    if missing:
        log.warning("skipped %d samples without input for mode '%s' (listed in the run summary), e.g. %s",
                    len(missing), mode, missing[0])
    if cfg.limit:
        jobs = jobs[:cfg.limit]
    summary = {
        "config": dataclasses.asdict(cfg), "mode": mode, "cache": str(out),
        "samples": int(len(table)), "skipped_done": len(done & set(table.sample_id)),
        "missing_input": missing, "done": 0, "failed": [], "frames": 0, "faces": 0, "detected_frames": 0,
        "backend": meta.backend, "backbone": meta.backbone, "embedding_dim": meta.embedding_dim,
    }
    if crops:
        summary["crops"] = str(crops.path)
    if jobs:
        _run_jobs(pool, jobs, cfg, backbone, settings, meta, parts, summary, crops)
    if crops:
        crops.merge()
    merge_shards(out, parts, meta)
    seconds = time.perf_counter() - start
    summary.update(seconds=round(seconds, 2), frames_per_s=round(summary["frames"] / seconds, 1) if seconds else 0.0,
                   face_hit_rate=round(summary["faces"] / summary["frames"], 4) if summary["frames"] else 0.0)
    if jobs or not summary_path(out).exists():  # a run with nothing to do keeps the last real summary
        summary_path(out).write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary


class _WorkerPool:
    """Decode/detect processes, started early so their imports overlap the model's loading."""

    def __init__(self, n: int, warm_up_detector: bool):
        from extract.transport import CropRings

        ctx = mp.get_context("spawn")  # the parent will hold a backend runtime with threads: never fork it
        self.jobs = ctx.Queue()
        self.results = ctx.Queue(maxsize=8 * n)
        self.rings = CropRings(ctx, n)
        self.procs = [ctx.Process(target=worker_main, args=(self.jobs, self.results, warm_up_detector, i,
                                                            self.rings.free[i]), daemon=True) for i in range(n)]
        for p in self.procs:
            p.start()
        self.closed = False

    def submit(self, settings: FaceSettings, jobs: list[Job], transport: str = "shm") -> None:
        """Opens the crop rings, queues the jobs, each with the settings, then a stop per worker."""
        if not self.rings.open((settings.chunk, *settings.input_size), use_shm=transport == "shm"):
            log.info("crops travel pickled through the results queue")
        for job in jobs:
            self.jobs.put((settings, job))
        self.close()

    def close(self) -> None:
        if not self.closed:
            if not self.rings.opened:  # no work was submitted: the workers still read how crops travel
                self.rings.open(None, use_shm=False)
            for _ in self.procs:
                self.jobs.put(None)
            self.closed = True

    def alive(self) -> bool:
        return any(p.is_alive() for p in self.procs)

    def __enter__(self) -> "_WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
        self.rings.close()


class _Crops:
    """Where SAVE_CROPS writes: the sibling crops file and its shards (``extract.crops``)."""

    def __init__(self, cache_file: Path, meta: CacheMeta, size: int):
        from extract.crops import crops_meta, crops_path

        self.path = crops_path(cache_file)
        self.parts = parts_dir_for(self.path)
        self.meta = crops_meta(meta, size)

    def merge(self) -> None:
        merge_shards(self.path, self.parts, self.meta)

    def writer(self, sample_id: str, source: str):
        from extract.crops import CropWriter

        return CropWriter(self.parts, sample_id, self.meta, source=source)


def _run_jobs(pool: _WorkerPool, jobs, cfg, backbone, settings, meta, parts, summary, crops=None) -> None:
    estimate = {job.job_id: _estimate_frames(job) for job in jobs}  # opens each video once
    jobs = sorted(jobs, key=lambda job: estimate[job.job_id], reverse=True)  # longest first: no idle worker
    total = sum(estimate.values())
    pool.submit(settings, jobs, cfg.transport)
    results = pool.results
    by_id = {job.job_id: job for job in jobs}
    open_jobs = set(by_id)
    finished: set[int] = set()
    writers: dict[str, VideoWriter] = {}
    batcher = _Batcher(backbone, cfg.batch)
    bar = tqdm(total=total, unit="frame", desc=f"extract {cfg.dataset}/{cfg.backbone}", smoothing=0.1)

    crop_writers: dict = {}

    def flush(sample_id: str) -> None:
        for rows, emb in batcher.ready(sample_id):
            writers[sample_id].append(emb, rows.frame_index, rows.face_mask, rows.bbox, rows.score)
            if crops:
                crop_writers[sample_id].append(rows.frame_index[rows.face_mask], rows.jpegs)

    def finish(job_id: int) -> None:
        job = by_id[job_id]
        for subject in job.subjects:
            flush(subject.sample_id)
            if subject.sample_id in writers and batcher.idle(subject.sample_id):
                if crops:  # crops first: a video counts as done once its features are in
                    crop_writers.pop(subject.sample_id).close()
                writers.pop(subject.sample_id).close()
        if all(s.sample_id not in writers for s in job.subjects):
            finished.discard(job_id)
            open_jobs.discard(job_id)
            summary["done"] += 1

    try:
        while open_jobs:
            # Embed full batches only: a partial one runs once every open job is done, or after a
            # second without a message (on a CPU, embedding every trickle of crops cost 3x the calls).
            drained = len(finished) >= len(open_jobs)
            try:
                msg = results.get_nowait() if len(batcher) and drained else results.get(timeout=1.0)
            except queue_lib.Empty:
                msg = None
            if isinstance(msg, Rows):
                msg = pool.rings.take(msg)  # crops out of the worker's ring, its slot freed
                job = by_id[msg.job_id]
                if msg.sample_id not in writers:
                    writers[msg.sample_id] = VideoWriter(parts, msg.sample_id, meta, source=job.path)
                    if crops:
                        crop_writers[msg.sample_id] = crops.writer(msg.sample_id, job.path)
                batcher.add(msg)
                flush(msg.sample_id)  # rows without faces go straight to disk, never pile up
                if msg.sample_id == job.subjects[0].sample_id:
                    n, faces = len(msg.frame_index), int(msg.face_mask.sum())
                    summary["frames"] += n
                    summary["faces"] += faces
                    bar.update(n)
                    bar.set_postfix(faces=f"{summary['faces'] / max(summary['frames'], 1):.1%}", refresh=False)
            elif isinstance(msg, RingAttached):
                pool.rings.attached(msg.worker)
            elif isinstance(msg, JobDone):
                finished.add(msg.job_id)
                summary["detected_frames"] += msg.detected
            elif isinstance(msg, JobFailed):
                for subject in by_id[msg.job_id].subjects:
                    batcher.drop(subject.sample_id)
                    if subject.sample_id in writers:
                        writers.pop(subject.sample_id).abort()
                    if subject.sample_id in crop_writers:
                        crop_writers.pop(subject.sample_id).abort()
                open_jobs.discard(msg.job_id)
                summary["failed"].append({"path": by_id[msg.job_id].path, "reason": msg.reason})
                log.error("failed: %s", msg.reason)
            if len(batcher) >= cfg.batch or (msg is None and len(batcher)):
                batcher.run()
                for sample_id in list(writers):
                    flush(sample_id)
            for job_id in list(finished):
                finish(job_id)
            if msg is None and not len(batcher) and not pool.alive():
                for job_id in list(open_jobs):
                    if job_id not in finished:
                        open_jobs.discard(job_id)
                        summary["failed"].append({"path": by_id[job_id].path, "reason": "worker process died"})
    finally:
        bar.close()
        for writer in [*writers.values(), *crop_writers.values()]:
            writer.abort()
