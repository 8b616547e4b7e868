"""Crops from the workers to the inference loop through shared memory: one ring of slots per worker.

Pickled through the results queue, crops cross two pipes' worth of copies and one process's
unpickling: measured at 235 MiB/s on the 2-core development machine, about 1,600 crops/s of
224x224x3, below the ~2,000 frames/s that 16 GPU-machine workers detect (docs/benchmarks.md).
With :class:`CropRings` each worker writes its crops into a slot of its own shared-memory ring and
sends only the slot number with the rest of the message; the main process copies the crops out
as the message arrives and hands the slot back. A worker with no free slot waits: the ring is
also the back-pressure.

The main process creates the rings (:meth:`CropRings.open`) once the backbone's input size is
known; each worker learns about its ring from the first item of its own ``free`` queue,
``("ring", name, shape)``, or ``("queue",)`` when there is no ring (too little room in
``/dev/shm``, or ``transport="queue"``), in which case crops travel pickled. A worker attaches as
soon as it starts work and says so (:class:`RingAttached`); the main process then unlinks the
ring's name at once (:meth:`CropRings.attached`). The memory stays mapped in both processes and
goes away with them, so a run killed with SIGKILL leaves nothing in ``/dev/shm``.

Example::

    rings = CropRings(ctx, n_workers=2)            # before the workers start: they get rings.free[i]
    rings.open((64, 224, 224, 3))                  # once the crop shape is known
    # True
    rows = rings.take(results.get())               # main process: crops copied out, slot freed
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue as queue_lib
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

log = logging.getLogger(__name__)

SLOTS = 8  # messages in flight per worker; the results queue holds 8 per worker too
SHM_DIR = "/dev/shm"


@dataclass
class RingAttached:
    """A worker's message: it has mapped its ring, whose name can go."""

    worker: int


class CropRings:
    """The main process's side: one ring of :data:`SLOTS` slots per worker.

    Args:
        ctx: the multiprocessing context the workers are started with.
        n_workers: one ring, and one ``free`` queue, per worker.
    """

    def __init__(self, ctx, n_workers: int):
        self.free = [ctx.Queue() for _ in range(n_workers)]
        self._shm: list[shared_memory.SharedMemory] = []
        self._views: list[np.ndarray] = []
        self._linked: set[int] = set()  # workers whose ring still has a name in /dev/shm
        self.opened = False  # every worker reads its first free-queue item before any work: open() is owed

    def open(self, shape: tuple | None, use_shm: bool = True) -> bool:
        """Creates the rings for messages of at most ``shape = (chunk, H, W, C)`` uint8 crops and
        tells every worker; False (crops pickled) when ``use_shm`` is off or /dev/shm is too small.
        Call it once, before any work (or stop) is queued."""
        self.opened = True
        if use_shm:
            need, room = len(self.free) * SLOTS * math.prod(shape), _shm_room()
            if room < 2 * need:
                log.warning(
                    "%s has %.0f MiB free, the crop rings need %.0f MiB: crops go through the queue",
                    SHM_DIR,
                    room / 2**20,
                    need / 2**20,
                )
                use_shm = False
        for free in self.free:
            if not use_shm:
                free.put(("queue",))
                continue
            shm = shared_memory.SharedMemory(create=True, size=SLOTS * math.prod(shape))
            self._linked.add(len(self._shm))
            self._shm.append(shm)
            self._views.append(np.ndarray((SLOTS, *shape), np.uint8, buffer=shm.buf))
            free.put(("ring", shm.name, tuple(shape)))
            for slot in range(SLOTS):
                free.put(slot)
        return use_shm

    def attached(self, worker: int) -> None:
        """``worker`` has mapped its ring: remove the ring's name (the memory lives on in both)."""
        if worker in self._linked:
            self._linked.discard(worker)
            self._shm[worker].unlink()

    def take(self, rows):
        """``rows`` with its crops in ``rows.crops`` (copied out of the ring, whose slot is freed)."""
        if rows.ring is None:
            return rows
        worker, slot, n = rows.ring
        rows.crops = self._views[worker][slot, :n].copy()
        rows.ring = None
        self.free[worker].put(slot)
        return rows

    def close(self, readers_gone: bool = False) -> None:
        """Removes the rings (the workers have stopped or are being stopped; ``readers_gone``: see
        :func:`close_queues`)."""
        self._views.clear()
        for worker, shm in enumerate(self._shm):
            shm.close()
            if worker in self._linked:
                shm.unlink()
        self._shm.clear()
        self._linked.clear()
        close_queues(self.free, readers_gone)


def close_queues(queues, readers_gone: bool = False) -> None:
    """Closes queues and waits for their feeder threads: a feeder still running holds the queue's
    named semaphores, which a process ending in ``os._exit`` then leaves to the resource tracker
    ("leaked semaphore objects"). ``readers_gone``: the processes that read them were stopped, so
    this one reads what they left first, or a feeder blocked on a full pipe would never end."""
    for queue in queues:
        if readers_gone:
            with contextlib.suppress(queue_lib.Empty, OSError, EOFError):
                while True:
                    queue.get(timeout=0.05)
        queue.close()
        queue.join_thread()


def _shm_room() -> int:
    try:
        stat = os.statvfs(SHM_DIR)
    except OSError:
        return 0
    return stat.f_bavail * stat.f_frsize


class RingSender:
    """A worker's side: ``send(rows)`` puts the crops in a free slot and the rest on ``results``.

    Args:
        worker: this worker's index (its ring and ``free`` queue).
        free: this worker's ``free`` queue (:attr:`CropRings.free`).
        results: the results queue.
    """

    def __init__(self, worker: int, free, results):
        self.worker, self.free, self.results = worker, free, results
        self._shm: shared_memory.SharedMemory | None = None
        self._view: np.ndarray | None = None
        self._mode: str | None = None

    def attach(self) -> None:
        """Reads this worker's ring from its ``free`` queue and maps it (once; the pipeline calls it
        when the worker takes its first job, after :meth:`CropRings.open`)."""
        if self._mode is not None:
            return
        info = self.free.get()
        self._mode = info[0]
        if self._mode == "ring":
            _, name, shape = info
            self._shm = shared_memory.SharedMemory(name=name)
            self._view = np.ndarray((SLOTS, *shape), np.uint8, buffer=self._shm.buf)
            self.results.put(RingAttached(self.worker))

    def __call__(self, rows) -> None:
        if len(rows.crops):
            self.attach()
        if self._mode == "ring" and len(rows.crops):
            if len(rows.crops) > self._view.shape[1] or rows.crops.shape[1:] != self._view.shape[2:]:
                raise ValueError(
                    f"{len(rows.crops)} crops of {rows.crops.shape[1:]} do not fit a ring slot "
                    f"of {self._view.shape[1:]}"
                )
            slot = self.free.get()
            self._view[slot, : len(rows.crops)] = rows.crops
            rows.ring = (self.worker, slot, len(rows.crops))
            rows.crops = rows.crops[:0]
        self.results.put(rows)

    def close(self) -> None:
        self._view = None
        if self._shm is not None:
            self._shm.close()
            self._shm = None
