"""The inference loop of an extraction run: workers' messages in, batched embeddings, shards out.

:class:`JobLoop` reads the results queue of the worker pool and handles each message with its own
method (``on_rows``, ``on_ring``, ``on_done``, ``on_failed``); :class:`Batcher` collects crops from
every worker into full batches for the backbone and hands each subject's rows back in order; a
subject's shard is closed once all its rows are written. ``extract.pipeline.run_extract`` sets it
up and merges the shards afterwards.
"""

from __future__ import annotations

import collections
import logging
import os
import queue as queue_lib
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from extract.cache import VideoWriter
from extract.fingerprint import fingerprint
from extract.transport import RingAttached
from extract.worker import MIN_FACE_SIDE, FaceSettings, Job, JobDone, JobFailed, Rows

log = logging.getLogger(__name__)


def process_started_at() -> float:
    """``time.time()`` at which this process started (Linux ``/proc``; elsewhere: when it imported this)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return _IMPORTED


_IMPORTED = time.time()


def estimate_frames(job: Job) -> int:
    if job.mode == "frames":
        return job.n_frames
    from extract.sources import SourceError, probe_video

    try:
        return probe_video(job.path).frames_header
    except SourceError:
        return 0  # the worker reports the failure with its reason


class Batcher:
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


class JobLoop:
    """One run's loop over the worker pool's messages (the summary counts are updated in place).

    Args:
        pool: the started ``extract.pool.WorkerPool``. jobs: what to extract.
        cfg: the ``ExtractConfig`` (batch, transport, names for the progress bar).
        backbone: embeds a batch of crops. meta: the cache attributes each shard gets.
        parts: the shard folder. summary: the run summary (frames, faces, done, failed, ...).
        crops: where SAVE_CROPS writes (``extract.pool.CropFiles``), or None.
        audio: the run's ``extract.audio_run.AudioRun``, told what became of the audio the jobs
            extracted in their decode pass; or None.
    """

    def __init__(self, pool, jobs: list[Job], cfg, backbone, meta, parts, summary: dict, crops=None, audio=None):
        self.started = time.perf_counter()
        self.pool, self.cfg, self.meta, self.parts, self.summary, self.crops = pool, cfg, meta, parts, summary, crops
        estimate = {job.job_id: estimate_frames(job) for job in jobs}  # opens each video once
        self.jobs = sorted(jobs, key=lambda job: estimate[job.job_id], reverse=True)  # longest first: no idle worker
        self.total = sum(estimate.values())
        self.by_id = {job.job_id: job for job in self.jobs}
        self.open_jobs = set(self.by_id)
        self.finished: set[int] = set()
        self.writers: dict[str, VideoWriter] = {}
        self.crop_writers: dict = {}
        self.batcher = Batcher(backbone, cfg.batch)
        self.audio = audio
        self.bar = None

    def run(self, settings: FaceSettings, submitted: bool = False) -> None:
        """Submits the jobs (unless ``submitted`` already, while the backbone loaded) and handles
        messages until every job is done or failed."""
        if not submitted:
            self.pool.submit(settings, self.jobs, self.cfg.transport)
        self.bar = tqdm(
            total=self.total, unit="frame", desc=f"extract {self.cfg.dataset}/{self.cfg.backbone}", smoothing=0.1
        )
        handlers = {Rows: self.on_rows, RingAttached: self.on_ring, JobDone: self.on_done, JobFailed: self.on_failed}
        try:
            while self.open_jobs:
                msg = self.next_message()
                if msg is not None:
                    handlers[type(msg)](msg)
                self.embed(idle=msg is None)
                for job_id in list(self.finished):
                    self.finish(job_id)
                if msg is None and not len(self.batcher) and not self.pool.alive():
                    self.on_dead_pool()
        finally:
            self.bar.close()
            for writer in [*self.writers.values(), *self.crop_writers.values()]:
                writer.abort()
            self.summary["loop_seconds"] = round(time.perf_counter() - self.started, 3)
            if "first_frame_s" in self.summary:  # the work itself: first frame decoded to last row written
                first = process_started_at() + self.summary["first_frame_s"]
                self.summary["work_seconds"] = round(time.time() - first, 3)

    def next_message(self):
        """The next message, or None after a second without one.

        Full batches only are embedded while jobs still send crops: a partial one runs once every
        open job is done, or after that second (on a CPU, embedding every trickle cost 3x the calls).
        """
        drained = len(self.finished) >= len(self.open_jobs)
        try:
            if len(self.batcher) and drained:
                return self.pool.results.get_nowait()
            return self.pool.results.get(timeout=1.0)
        except queue_lib.Empty:
            return None

    def on_rows(self, msg: Rows) -> None:
        msg = self.pool.rings.take(msg)  # crops out of the worker's ring, its slot freed
        job = self.by_id[msg.job_id]
        if msg.sample_id not in self.writers:
            self.writers[msg.sample_id] = VideoWriter(
                self.parts, msg.sample_id, self.meta, source=job.path, fingerprint=fingerprint(job.path)
            )
            if self.crops:
                self.crop_writers[msg.sample_id] = self.crops.writer(msg.sample_id, job.path)
        self.batcher.add(msg)
        self.flush(msg.sample_id)  # rows without faces go straight to disk, never pile up
        if msg.sample_id == job.subjects[0].sample_id:
            n, faces = len(msg.frame_index), int(msg.face_mask.sum())
            self.summary["frames"] += n
            self.summary["faces"] += faces
            self.bar.update(n)
            self.bar.set_postfix(faces=f"{self.summary['faces'] / max(self.summary['frames'], 1):.1%}", refresh=False)

    def on_ring(self, msg: RingAttached) -> None:
        self.pool.rings.attached(msg.worker)

    def on_done(self, msg: JobDone) -> None:
        self.finished.add(msg.job_id)
        if msg.audio is not None:
            self.audio.record(self.by_id[msg.job_id].path, msg.audio)
        self.summary["detected_frames"] += msg.detected
        if msg.tiny:
            path = self.by_id[msg.job_id].path
            shown = ", ".join(map(str, msg.tiny[:5])) + (", ..." if len(msg.tiny) > 5 else "")
            log.warning(
                "%s: %d frames whose face is under %d pixels wide (frames %s) are kept as frames without a face",
                path,
                len(msg.tiny),
                MIN_FACE_SIDE,
                shown,
            )
            self.summary.setdefault("tiny_faces", []).append({"path": path, "frames": list(msg.tiny)})
        if msg.first_frame_at:  # seconds from this process's start to the first decoded frame
            first = round(msg.first_frame_at - process_started_at(), 3)
            self.summary["first_frame_s"] = min(self.summary.get("first_frame_s", first), first)

    def on_failed(self, msg: JobFailed) -> None:
        for subject in self.by_id[msg.job_id].subjects:
            self.batcher.drop(subject.sample_id)
            if subject.sample_id in self.writers:
                self.writers.pop(subject.sample_id).abort()
            if subject.sample_id in self.crop_writers:
                self.crop_writers.pop(subject.sample_id).abort()
        self.open_jobs.discard(msg.job_id)
        self.summary["failed"].append({"path": self.by_id[msg.job_id].path, "reason": msg.reason})
        log.error("failed: %s", msg.reason)
        self.audio_lost(self.by_id[msg.job_id], msg.reason)

    def audio_lost(self, job: Job, reason: str) -> None:
        """The audio a failed job was extracting in its pass fails with it (a rerun does both again)."""
        if job.audio is not None:
            self.audio.record(job.path, {"error": reason, "source": job.path})

    def on_dead_pool(self) -> None:
        for job_id in list(self.open_jobs):
            if job_id not in self.finished:
                self.open_jobs.discard(job_id)
                self.summary["failed"].append({"path": self.by_id[job_id].path, "reason": "worker process died"})
                self.audio_lost(self.by_id[job_id], f"{self.by_id[job_id].path}: worker process died")

    def embed(self, idle: bool) -> None:
        """Runs a batch when one is full (or, ``idle``, whatever is waiting) and writes what is ready."""
        if len(self.batcher) >= self.cfg.batch or (idle and len(self.batcher)):
            self.batcher.run()
            for sample_id in list(self.writers):
                self.flush(sample_id)

    def flush(self, sample_id: str) -> None:
        for rows, emb in self.batcher.ready(sample_id):
            self.writers[sample_id].append(emb, rows.frame_index, rows.face_mask, rows.bbox, rows.score)
            if self.crops:
                self.crop_writers[sample_id].append(rows.frame_index[rows.face_mask], rows.jpegs)

    def finish(self, job_id: int) -> None:
        """Closes the shards of a job whose worker is done and whose rows are all written."""
        job = self.by_id[job_id]
        for subject in job.subjects:
            self.flush(subject.sample_id)
            if subject.sample_id in self.writers and self.batcher.idle(subject.sample_id):
                if self.crops:  # crops first: a video counts as done once its features are in
                    self.crop_writers.pop(subject.sample_id).close()
                self.writers.pop(subject.sample_id).close()
        if all(s.sample_id not in self.writers for s in job.subjects):
            self.finished.discard(job_id)
            self.open_jobs.discard(job_id)
            self.summary["done"] += 1
