"""Stage one's parts alone: decode, decode + BlazeFace, the whole worker side, the backbone.

The CPU-side rates run in fresh processes (``spawn``, as the extraction workers), started once
for all tasks: for each task, the processes taking part build their detector, all wait at a
barrier so that they start together, then each goes through the clip again and again until
``min_seconds`` have passed. A rate is all frames over the span from the common
start to the last process's end, so a slow process counts against it.

Example::

    run_tasks([("decode", "", 1), ("detect", "full+short", 2)], "tests/media/single_face.mp4", 1.0)
    # [{'fps': 730.2, 'frames': 792, 'seconds': 1.08}, {'fps': 181.4, 'frames': 432, 'seconds': 2.38}]
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue as queue_lib
import time

import numpy as np

log = logging.getLogger(__name__)

MODES = ("decode", "detect", "keyframes", "worker")


def _one_pass(mode: str, clip: str, det, tracker, input_size: tuple, every: int) -> int:
    from extract.backbones import to_model_input
    from extract.faces import crop_face
    from extract.keyframes import KeyframeDetector
    from extract.sources import iter_video

    videos = iter_video(clip)
    if mode == "decode":
        return sum(1 for _ in videos)
    faces = KeyframeDetector(det, every if mode == "keyframes" else 1)
    frames = 0
    for _, rgb, found in faces.stream(videos):
        frames += 1
        if mode == "worker":
            face = tracker.update(found, rgb.shape[1])
            if face is not None:
                to_model_input(crop_face(rgb, face, input_size[:2]), input_size)
    return frames


def _cpu_child(
    rank: int, tasks: list, clip: str, input_size: tuple, min_seconds: float, every: int, barrier, results
) -> None:
    """One of the processes of :func:`cpu_rates`: runs every task it takes part in, in step with the others.

    Sends ``(task index, frames, start, end)`` on the system-wide monotonic clock.
    """
    from extract import worker_env  # noqa: F401  (a worker's process: one thread, no TensorFlow)
    from extract.faces import FaceDetector, SubjectTracker

    detectors = {}
    for index, (mode, detector, processes) in enumerate(tasks):
        take_part = rank < processes
        if take_part and mode != "decode" and detector not in detectors:
            detectors[detector] = FaceDetector(model=detector)  # built before the clock starts
        barrier.wait()  # every process, taking part or not: a task starts when the last one ended
        if not take_part:
            continue
        start, frames = time.monotonic(), 0
        while True:
            frames += _one_pass(mode, clip, detectors.get(detector), SubjectTracker(), input_size, every)
            if time.monotonic() - start >= min_seconds:
                break
        results.put((index, frames, start, time.monotonic()))
    for det in detectors.values():
        det.close()


def run_tasks(
    tasks: list[tuple[str, str, int]], clip: str, min_seconds: float, input_size: tuple = (64, 64, 1), every: int = 10
) -> list[dict]:
    """Frames per second of each ``(mode, detector, processes)`` task, run one after the other.

    Args:
        tasks: ``mode`` is ``decode`` (OpenCV decode + BGR->RGB, as ``extract.sources.iter_video``),
            ``detect`` (and BlazeFace ``detector`` on every frame), ``keyframes`` (the detector every
            ``every`` frames, faces interpolated between agreeing ones: ``extract.keyframes``) or
            ``worker`` (and the subject tracker, the face crop and ``to_model_input``: all a worker
            computes with ``DETECT_EVERY=1``);
            ``detector`` an ``extract.faces.DETECTOR_MODELS`` name; ``processes`` how many at once.
        clip: the video each process goes through until ``min_seconds`` have passed.
        input_size: the backbone's crop size (``worker`` mode).
        every: ``keyframes`` mode: frames from one detection to the next.

    Returns:
        One ``{"fps", "frames", "seconds"}`` per task.
    """
    for mode, _, processes in tasks:
        if mode not in MODES or processes < 1:
            raise ValueError(f"bad task ({mode}, {processes}): mode in {', '.join(MODES)}, processes >= 1")
    n = max(t[2] for t in tasks)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(
            target=_cpu_child, args=(rank, tasks, clip, tuple(input_size), min_seconds, every, barrier, results)
        )
        for rank in range(n)
    ]
    for p in procs:
        p.start()
    got: dict[int, list] = {i: [] for i in range(len(tasks))}
    try:
        for _ in range(sum(t[2] for t in tasks)):
            while True:
                try:
                    index, *timing = results.get(timeout=2.0)
                    break
                except queue_lib.Empty:
                    dead = [p.exitcode for p in procs if p.exitcode]
                    if dead:
                        raise RuntimeError(f"{clip}: a benchmark process exited with code {dead[0]}") from None
            got[index].append(timing)
    finally:
        for p in procs:
            p.join(timeout=30)
    out = []
    for index in range(len(tasks)):
        frames = sum(g[0] for g in got[index])
        seconds = max(g[2] for g in got[index]) - min(g[1] for g in got[index])
        out.append({"fps": round(frames / seconds, 1), "frames": frames, "seconds": round(seconds, 2)})
    return out


def cpu_rates(clip: str, workers: int, detector: str, input_size: tuple, min_seconds: float, every: int = 1) -> dict:
    """Every CPU-side rate the report needs: decode, both detectors, the worker side; 1 and N processes;
    with ``every > 1``, decode + keyframe detection too."""
    keyframes = (
        [("decode_keyframe_fps_1", "keyframes", detector, 1), ("decode_keyframe_fps", "keyframes", detector, workers)]
        if every > 1
        else []
    )
    runs = [
        ("decode_fps_1", "decode", detector, 1),
        ("decode_fps", "decode", detector, workers),
        ("decode_detect_fps_1", "detect", detector, 1),
        ("decode_detect_fps", "detect", detector, workers),
        ("decode_detect_short_fps_1", "detect", "short", 1),
        ("decode_detect_short_fps", "detect", "short", workers),
        ("worker_fps", "worker", detector, workers),
        *keyframes,
    ]
    results = run_tasks([r[1:] for r in runs], clip, min_seconds, input_size, every)
    out = {}
    for (key, mode, model, processes), result in zip(runs, results):
        out[key] = result["fps"]
        log.info("%s: %s, %d process(es), detector %s: %.1f frames/s", key, mode, processes, model, result["fps"])
    return out


def load(cfg, runtime: str = "auto"):
    """The backbone the run benchmarks, as stage one loads it (``RUNTIME=auto``: the LiteRT copy on
    the CPU path, exported first if this machine has none), with the batch size of the run."""
    from extract.litert import load_inference_backbone

    return load_inference_backbone(
        cfg.backbone,
        cfg.weights,
        precision=cfg.precision,
        runtime=runtime,
        batch_size=cfg.batch,
        input_size=cfg.crop_size(),
    )


def backbone_rate(backbone, batch: int, min_seconds: float, seed: int = 0) -> dict:
    """Images per second of ``backbone.embed`` on uint8 batches already in memory.

    The first call (compilation, allocator warm-up) is not timed; then full batches are embedded
    until ``min_seconds`` have passed, at least three times.
    """
    images = np.random.default_rng(seed).integers(0, 256, (batch, *backbone.input_size), dtype=np.uint8)
    backbone.embed(images)
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < min_seconds:
        backbone.embed(images)
        calls += 1
    seconds = time.perf_counter() - start
    rate = calls * batch / seconds
    log.info(
        "backbone_img_s: %s %s on %s, batch %d: %.1f images/s",
        backbone.name,
        backbone.precision,
        backbone.backend,
        batch,
        rate,
    )
    return {
        "backbone_img_s": round(rate, 1),
        "backbone_precision": backbone.precision,
        "backbone_runtime": backbone.backend,
        "embedding_dim": backbone.embedding_dim,
    }
