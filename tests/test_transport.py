"""Crop rings: crops cross from worker processes intact and in order, slots are reused, the queue
fallback works, and extraction writes the same cache either way."""

import multiprocessing as mp
import os

import numpy as np
import pytest

from extract.cache import CacheReader, cache_path
from extract.pipeline import ExtractConfig, run_extract
from extract.transport import SLOTS, CropRings, RingAttached, RingSender
from extract.worker import Rows

pytestmark = pytest.mark.slow  # trains or extracts for seconds: `-m 'not slow'` skips it

SHAPE = (4, 8, 8, 3)  # 4 crops of 8x8x3 per message at most


def _rows(k: int, n: int, worker: int = 0) -> Rows:
    crops = np.full((n, 8, 8, 3), k, np.uint8)  # message k: every pixel is k
    return Rows(
        job_id=worker,
        sample_id="s",
        frame_index=np.arange(n, dtype=np.int32) + 10 * k,
        face_mask=np.ones(n, bool),
        bbox=np.zeros((n, 4), np.float32),
        score=np.ones(n, np.float32),
        crops=crops,
    )


def _send(worker: int, messages: int, results, free) -> None:
    send = RingSender(worker, free, results)
    for k in range(messages):
        send(_rows(k, 1 + k % 4, worker))  # 1 to 4 crops: slots are reused partly filled
    send(_rows(99, 0, worker))  # a message without a face: no slot taken
    send.close()


@pytest.mark.parametrize("use_shm", [True, False])
def test_crops_cross_intact_in_order_and_slots_are_reused(use_shm):
    ctx = mp.get_context("spawn")
    results = ctx.Queue(maxsize=4)
    rings = CropRings(ctx, 2)
    messages = 3 * SLOTS  # more messages than slots: the worker must get freed slots back
    procs = [ctx.Process(target=_send, args=(w, messages, results, rings.free[w])) for w in range(2)]
    for p in procs:
        p.start()
    try:
        assert rings.open(SHAPE, use_shm=use_shm) is use_shm
        got, attached = {0: [], 1: []}, []
        while sum(len(v) for v in got.values()) < 2 * (messages + 1):
            msg = results.get(timeout=60)
            if isinstance(msg, RingAttached):
                attached.append(msg.worker)
                rings.attached(msg.worker)
                assert not any(
                    name.endswith(rings._shm[msg.worker].name.lstrip("/")) for name in os.listdir("/dev/shm")
                )  # unlinked as soon as the worker has it: a SIGKILL leaves nothing behind
                continue
            assert (msg.ring is not None) == (use_shm and len(msg.frame_index) > 0)
            rows = rings.take(msg)
            assert rows.ring is None and rows.crops.shape == (len(rows.frame_index), 8, 8, 3)
            got[rows.job_id].append(rows)
        assert sorted(attached) == ([0, 1] if use_shm else [])
        for worker, received in got.items():  # each worker's messages in order, each crop as sent
            assert len(received) == messages + 1 and len(received[-1].crops) == 0
            for k, rows in enumerate(received[:-1]):
                assert rows.frame_index[0] == 10 * k and len(rows.crops) == 1 + k % 4 and (rows.crops == k).all()
    finally:
        for p in procs:
            p.join(timeout=30)
        rings.close()
    assert all(p.exitcode == 0 for p in procs)


def test_a_message_that_does_not_fit_its_slot_is_refused():
    ctx = mp.get_context("spawn")
    rings = CropRings(ctx, 1)
    results = ctx.Queue()
    try:
        assert rings.open(SHAPE)
        send = RingSender(0, rings.free[0], results)
        with pytest.raises(ValueError, match=r"5 crops of \(8, 8, 3\) do not fit a ring slot of \(4, 8, 8, 3\)"):
            send(_rows(1, 5))
        send.close()
    finally:
        rings.close()


def test_extraction_writes_the_same_cache_through_rings_and_queue(tmp_path):
    from data_manifests.synthetic import generate

    generate(tmp_path / "data", seed=4, n_clips=3, min_frames=20, max_frames=30, raw_videos=0)
    caches = {}
    for transport in ("shm", "queue"):
        run_extract(
            ExtractConfig(
                dataset="synthetic",
                data_root=str(tmp_path / "data"),
                cache_dir=str(tmp_path / transport),
                transport=transport,
                workers=2,
                batch=32,
            )
        )
        caches[transport] = CacheReader(cache_path(tmp_path / transport, "synthetic", "fer"))
    ids = caches["shm"].video_ids()
    assert ids == caches["queue"].video_ids() and len(ids) >= 3
    for vid in ids:
        a, b = caches["shm"].read(vid), caches["queue"].read(vid)
        np.testing.assert_array_equal(a.face_mask, b.face_mask)
        np.testing.assert_array_equal(a.embeddings, b.embeddings)
    with pytest.raises(ValueError, match=r"--transport must be one of shm, queue, got 'pipe'"):
        run_extract(ExtractConfig(dataset="synthetic", data_root=str(tmp_path / "data"), transport="pipe"))


def test_workers_stop_cleanly_when_no_work_was_submitted():
    from extract.pool import WorkerPool

    with WorkerPool(2, warm_up_detector=False) as pool:  # a run with nothing left to extract
        pass
    # Each read how crops travel, then its stop, and exited: none had to be terminated (-15).
    assert [p.exitcode for p in pool.procs] == [0, 0]
