"""The driver's side of ``ENGINE=ray``: the batches the cluster sends back -> the cache's own shard
writer (``extract.cache.VideoWriter``), one shard per finished video, as the local engine writes them.

Ray Data may hand batches back out of order (``preserve_order`` off, so no actor waits on another)
and, after a retried task, twice. Each frame row carries its subject's running number (``seq``), so
:class:`ShardSink` writes every subject's rows in order, once: a piece that starts past the rows
written waits, a piece already written is dropped. A job's end row (``kind`` = :data:`END` or
:data:`FAILED`) says how many frames it had; its shards close once that many rows are in.

The columns of a batch (numpy arrays of equal length), written by ``extract.ray_engine``:
``job_id``, ``sample_id``, ``seq``, ``kind``, ``detail`` (an end row's JSON ``JobDone`` or a failed
job's reason), ``frame_index``, ``face_mask``, ``bbox``, ``score``, ``embedding`` and ``audio`` (an end
row's audio shards, pickled ``{sample_id: file bytes}``, from the actor's own node; else empty).
"""

from __future__ import annotations

import json
import logging
import pickle
import time

import numpy as np

from extract.cache import VideoWriter, publish_shard
from extract.fingerprint import fingerprint
from extract.worker import MIN_FACE_SIDE, Job

log = logging.getLogger(__name__)

FRAME, END, FAILED = 0, 1, 2


class ShardSink:
    """Writes the cluster's rows into per-video shards under ``parts`` and keeps the run summary.

    Args:
        jobs: the run's jobs (``extract.worker.Job``). meta: the shards' ``CacheMeta``.
        parts: the shard folder. summary: the run summary, updated in place (frames, faces, done,
            failed, detected_frames, tiny_faces). bar: a tqdm bar (frames) or None.
        audio: the run's ``extract.audio_run.AudioRun`` where jobs carry audio, else None.
    """

    def __init__(self, jobs: list[Job], meta, parts, summary: dict, bar=None, audio=None):
        self.by_id = {job.job_id: job for job in jobs}
        self.meta, self.parts, self.summary, self.bar, self.audio = meta, parts, summary, bar, audio
        self.writers: dict[str, VideoWriter] = {}
        self.written: dict[str, int] = {}  # rows of each subject written so far
        self.waiting: dict[str, dict[int, dict]] = {}  # pieces that start past the rows written, by seq
        self.ends: dict[int, dict] = {}  # job -> its JobDone fields, until its rows are all in
        self.closed: set[int] = set()  # jobs done or failed: later copies of their rows are dropped
        self.first_frame_at = 0.0  # time.time() of the first frame decoded anywhere, from the jobs' ends
        self.last_write_at = 0.0

    @property
    def open_jobs(self) -> list[int]:
        return [j for j in self.by_id if j not in self.closed]

    def add(self, batch: dict) -> None:
        """One batch from the cluster: frame rows go to their shards, end rows close jobs."""
        kind = np.asarray(batch["kind"])
        for i in np.flatnonzero(kind != FRAME):
            self._end(int(batch["job_id"][i]), int(kind[i]), str(batch["detail"][i]), batch["audio"][i])
        frames = np.flatnonzero(kind == FRAME)
        sample_ids = np.asarray(batch["sample_id"])[frames]
        for sample_id in dict.fromkeys(sample_ids.tolist()):
            rows = frames[sample_ids == sample_id]
            piece = {k: np.asarray(batch[k])[rows] for k in ("seq", "frame_index", "face_mask", "bbox", "score")}
            piece["embedding"] = np.asarray(batch["embedding"])[rows]
            self._piece(int(batch["job_id"][rows[0]]), sample_id, piece)
        for job_id in list(self.ends):
            self._close_if_complete(job_id)

    def _piece(self, job_id: int, sample_id: str, piece: dict) -> None:
        if job_id in self.closed:
            return
        seq, first = np.unique(piece["seq"], return_index=True)  # sorted, each row once
        piece = {k: v[first] for k, v in piece.items()}
        waiting = self.waiting.setdefault(sample_id, {})
        for run in np.split(np.arange(len(seq)), np.flatnonzero(np.diff(seq) != 1) + 1):  # contiguous runs
            waiting[int(seq[run[0]])] = {k: v[run] for k, v in piece.items()}
        self._drain(job_id, sample_id)

    def _drain(self, job_id: int, sample_id: str) -> None:
        """Writes the waiting pieces that continue the rows written, dropping the rows already in."""
        waiting = self.waiting[sample_id]
        while True:
            done = self.written.get(sample_id, 0)
            start = next((s for s in sorted(waiting) if s <= done), None)
            if start is None:
                return
            piece = waiting.pop(start)
            keep = piece["seq"] >= done  # a retried task's copy of rows already written
            if keep.any():
                self._write(job_id, sample_id, {k: v[keep] for k, v in piece.items()})

    def _write(self, job_id: int, sample_id: str, piece: dict) -> None:
        job = self.by_id[job_id]
        if sample_id not in self.writers:
            self.writers[sample_id] = VideoWriter(
                self.parts, sample_id, self.meta, source=job.path, fingerprint=fingerprint(job.path)
            )
        self.writers[sample_id].append(
            piece["embedding"], piece["frame_index"], piece["face_mask"], piece["bbox"], piece["score"]
        )
        self.written[sample_id] = self.written.get(sample_id, 0) + len(piece["seq"])
        self.last_write_at = time.time()
        if sample_id == job.subjects[0].sample_id:
            n, faces = len(piece["seq"]), int(piece["face_mask"].sum())
            self.summary["frames"] += n
            self.summary["faces"] += faces
            if self.bar is not None:
                self.bar.update(n)

    def _end(self, job_id: int, kind: int, detail: str, audio: bytes = b"") -> None:
        if job_id in self.closed or job_id in self.ends:
            return  # a retried task's second end
        if kind == FAILED:
            self.fail(job_id, detail)
        else:
            self.ends[job_id] = json.loads(detail)
            first = self.ends[job_id]["first_frame_at"]
            self.first_frame_at = min(self.first_frame_at or first, first)
            self._audio_done(self.by_id[job_id], self.ends[job_id].get("audio"), audio)

    def _audio_done(self, job: Job, result: dict | None, shards: bytes) -> None:
        """Publishes the audio shards of a finished job's decode pass and tells the audio run."""
        if self.audio is None or job.audio is None or result is None:
            return
        if "error" not in result:
            for sample_id, data in pickle.loads(shards).items():  # written by this run's own actors
                publish_shard(job.audio.parts, sample_id, data)
        self.audio.record(job.path, result)

    def _close_if_complete(self, job_id: int) -> None:
        job, end = self.by_id[job_id], self.ends[job_id]
        if any(self.written.get(s.sample_id, 0) < end["frames"] for s in job.subjects):
            return
        for subject in job.subjects:
            self.writers.pop(subject.sample_id).close()
        del self.ends[job_id]
        self.closed.add(job_id)
        self.summary["done"] += 1
        self.summary["detected_frames"] += end["detected"]
        if end["tiny"]:
            log.warning(
                "%s: %d frames whose face is under %d pixels wide are kept as frames without a face",
                job.path,
                len(end["tiny"]),
                MIN_FACE_SIDE,
            )
            self.summary.setdefault("tiny_faces", []).append({"path": job.path, "frames": end["tiny"]})

    def fail(self, job_id: int, reason: str) -> None:
        """A job that cannot finish: its half-written shards go, the summary lists it."""
        for subject in self.by_id[job_id].subjects:
            if subject.sample_id in self.writers:
                self.writers.pop(subject.sample_id).abort()
            self.waiting.pop(subject.sample_id, None)
        had_end = self.ends.pop(job_id, None) is not None  # its audio was recorded with its end
        self.closed.add(job_id)
        self.summary["failed"].append({"path": self.by_id[job_id].path, "reason": reason})
        log.error("failed: %s", reason)
        job = self.by_id[job_id]
        if self.audio is not None and job.audio is not None and not had_end:
            self.audio.record(job.path, {"error": reason, "source": job.path})

    def work_seconds(self) -> float:
        """First frame decoded (on any node: their clocks must agree) to last row written."""
        return round(self.last_write_at - self.first_frame_at, 3) if self.first_frame_at else 0.0

    def abort(self) -> None:
        """The run stopped: videos in flight lose their half-written shards; finished ones stay."""
        for writer in self.writers.values():
            writer.abort()
        self.writers.clear()
