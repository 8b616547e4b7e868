"""The processes of an extraction run: :class:`WorkerPool` (decode/detect workers, their queues and
crop rings) and :class:`CropFiles` (where ``SAVE_CROPS`` writes). ``extract.pipeline`` starts them;
``extract.job_loop.JobLoop`` reads from them."""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
from pathlib import Path

from extract.cache import CacheMeta, merge_shards, parts_dir_for
from extract.transport import CropRings, close_queues
from extract.worker import FaceSettings, Job, worker_main

log = logging.getLogger(__name__)


def worker_imports(detector: bool, audio: str) -> list[str]:
    """The modules a worker of this run imports before its first frame (LiteRT for BlazeFace: about
    0.1 s a process; librosa: about 1.6 s with its compiled helpers)."""
    from extract.audio import audio_imports

    imports = ["extract.worker", "extract.transport", "extract.sources"]
    if detector:
        imports += ["extract.blazeface", "extract.faces", "extract.keyframes"]  # blazeface imports LiteRT
    sound = audio_imports(audio)  # none for a ``file:`` model: it runs in the run's own audio process
    if sound:
        imports += ["extract.audio_pass", *sound]
    return imports


def worker_context(imports: list[str]):
    """Workers fork from one server that has paid their imports once, not once per worker.

    The parent is never forked: it will hold a backend runtime with threads. The server is a fresh
    interpreter (multiprocessing's ``forkserver``) that imports ``extract.worker_env`` and then
    ``imports``; each worker is a fork of it. One server lives as long as its parent, so in a
    process that runs several extractions the first one's imports are the ones preloaded: the
    others' workers import the rest themselves. Where there is no fork (Windows), workers are spawned.
    """
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["extract.worker_env", *imports])
    return ctx


class WorkerPool:
    """Decode/detect processes, started early so their imports overlap the model's loading."""

    def __init__(self, n: int, warm_up_detector: bool, warm_up_audio: str = ""):
        ctx = worker_context(worker_imports(warm_up_detector, warm_up_audio))
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
        self.start_error: BaseException | None = None
        # A fork server answers each start only once its imports are done (seconds): the parent
        # goes on loading the backbone meanwhile.
        self.starter = threading.Thread(target=self._start, name="worker-start", daemon=True)
        self.starter.start()
        self.closed = False

    def _start(self) -> None:
        try:
            for p in self.procs:
                p.start()
        except BaseException as err:  # re-raised in the parent's thread by join_start
            self.start_error = err

    def join_start(self) -> None:
        """Waits for every worker to have started; a failure to start is raised here."""
        self.starter.join()
        if self.start_error is not None:
            raise RuntimeError(f"the decode/detect workers did not start: {self.start_error}") from self.start_error

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
        """Whether a worker may still send: starting or running."""
        if self.starter.is_alive():
            return True
        if self.start_error is not None:
            self.join_start()
        return any(p.is_alive() for p in self.procs)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close()
        self.starter.join()
        for p in self.procs:
            if p.pid is None:  # never started (start failed)
                continue
            if exc_type is not None:  # an error: workers may be blocked on a full queue, never drained now
                p.terminate()
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
        stopped = exc_type is not None or any(p.exitcode != 0 for p in self.procs)
        self.rings.close(stopped)
        close_queues((self.jobs, self.results), stopped)


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
