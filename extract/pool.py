"""The processes of an extraction run: :class:`WorkerPool` (decode/detect workers, their queues and
crop rings) and :class:`CropFiles` (where ``SAVE_CROPS`` writes). ``extract.pipeline`` starts them;
``extract.job_loop.JobLoop`` reads from them."""

from __future__ import annotations

import logging
import multiprocessing as mp
from pathlib import Path

from extract.cache import CacheMeta, merge_shards, parts_dir_for
from extract.worker import FaceSettings, Job, worker_main

log = logging.getLogger(__name__)


class WorkerPool:
    """Decode/detect processes, started early so their imports overlap the model's loading."""

    def __init__(self, n: int, warm_up_detector: bool, warm_up_audio: str = ""):
        from extract.transport import CropRings

        ctx = mp.get_context("spawn")  # the parent will hold a backend runtime with threads: never fork it
        self.jobs = ctx.Queue()
        self.results = ctx.Queue(maxsize=8 * n)
        self.rings = CropRings(ctx, n)
        self.procs = [
            ctx.Process(
                target=worker_main,
                args=(self.jobs, self.results, warm_up_detector, i, self.rings.free[i], warm_up_audio),
                daemon=True,
            )
            for i in range(n)
        ]
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

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close()
        for p in self.procs:
            if exc_type is not None:  # an error: workers may be blocked on a full queue, never drained now
                p.terminate()
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
        self.rings.close()


class CropFiles:
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
