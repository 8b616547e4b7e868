"""How fast crops reach the inference loop: pickled through the results queue, or through the
workers' shared-memory rings (``extract.transport``), with the pipeline's own classes.

Each of ``producers`` processes sends ``messages`` :class:`extract.worker.Rows` of ``chunk`` uint8
crops; the main process receives them as ``extract.pipeline`` does (``CropRings.take``, which
copies the crops out and frees the slot) and counts crops per second from the first message to
the last.

Example::

    transport_rates(producers=2, messages=40, shape=(64, 224, 224, 3))
    # {'transport_queue_crops_s': 1638.0, 'transport_ring_crops_s': 9875.2, 'transport_crop_shape': [224, 224, 3]}
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time

import numpy as np

log = logging.getLogger(__name__)


def _producer(worker: int, messages: int, shape: tuple, results, free) -> None:
    from extract.transport import RingSender
    from extract.worker import Rows

    crops = np.random.default_rng(worker).integers(0, 256, shape, dtype=np.uint8)
    n = shape[0]
    send = RingSender(worker, free, results) if free is not None else results.put
    for k in range(messages):
        send(
            Rows(
                job_id=worker,
                sample_id=f"w{worker}",
                frame_index=np.arange(k * n, (k + 1) * n, dtype=np.int32),
                face_mask=np.ones(n, bool),
                bbox=np.zeros((n, 4), np.float32),
                score=np.ones(n, np.float32),
                crops=crops,
            )
        )
    if free is not None:
        send.close()


def _rate(mode: str, producers: int, messages: int, shape: tuple) -> float:
    from extract.transport import CropRings, RingAttached

    ctx = mp.get_context("spawn")
    results = ctx.Queue(maxsize=8 * producers)
    rings = CropRings(ctx, producers)
    procs = [
        ctx.Process(target=_producer, args=(i, messages, shape, results, rings.free[i] if mode == "ring" else None))
        for i in range(producers)
    ]
    for p in procs:
        p.start()
    try:
        if mode == "ring" and not rings.open(shape):
            raise RuntimeError("/dev/shm is too small for the crop rings")
        if mode != "ring":
            rings.open(shape, use_shm=False)
        total, start = 0, None
        received = 0
        while received < producers * messages:
            msg = results.get(timeout=120)
            if isinstance(msg, RingAttached):
                rings.attached(msg.worker)
                continue
            received += 1
            rows = rings.take(msg)
            if start is None:
                start = time.perf_counter()  # from the first message: process start-up is not transport
                continue
            total += len(rows.crops)
        seconds = time.perf_counter() - start
    finally:
        for p in procs:
            p.join(timeout=30)
        rings.close()
    return total / seconds


def transport_rates(producers: int, messages: int, shape: tuple) -> dict:
    """Crops per second into the main process, pickled (``queue``) and through the rings (``ring``)."""
    out = {}
    for mode in ("queue", "ring"):
        rate = _rate(mode, producers, messages, tuple(shape))
        out[f"transport_{mode}_crops_s"] = round(rate, 1)
        log.info(
            "transport_%s_crops_s: %d processes, %d messages of %s: %.1f crops/s (%.0f MiB/s)",
            mode,
            producers,
            messages,
            shape,
            rate,
            rate * np.prod(shape[1:]) / 2**20,
        )
    out["transport_crop_shape"] = list(shape[1:])
    return out
