"""The whole of stage one: ``extract.pipeline.run_extract`` on real media, and its memory.

The runs happen in a fresh process, so that their memory is their own: the first run's main process
(the batching and inference loop) reports ``RUSAGE_SELF``, later runs the sampled ``VmRSS`` of the
same process; each run's decode/detect workers (new processes every run) are watched through
``/proc/<pid>/status`` (``VmHWM``) while they live. The rate that counts, ``end_to_end_fps``, is
frames over the time spent in the pipeline's job loop (first job queued to last row written); the
model load and the process start-up that come before it, which a long run amortises, are in
``end_to_end_fps_total``.

Example::

    cfg = BenchConfig().resolved()
    extraction(cfg, Path("bench-work"), Path(cfg.clip))["end_to_end_fps"]
    # 131.2
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue as queue_lib
import resource
import shutil
import threading
from pathlib import Path

from bench.common import BenchConfig, affwild2_tree, child_pids, peak_rss_mb, repeat_clip, vm_hwm_mb, vm_rss_mb

log = logging.getLogger(__name__)


class _Peaks(threading.Thread):
    """Samples, during one run, this process's resident memory and the peak of its workers.

    Workers are the children of the fork server (``extract.pool.worker_context``), or the children
    running ``spawn_main`` where workers are spawned (the resource tracker is neither); each run
    starts its own, so their ``VmHWM`` is that run's. This process's ``VmRSS`` is sampled because
    its high-water mark spans every run of the process.
    """

    def __init__(self, every: float = 0.1):
        super().__init__(daemon=True)
        self.every = every
        self.main = 0.0
        self.workers: dict[int, float] = {}
        self._done = threading.Event()

    def _sample(self) -> None:
        self.main = max(self.main, vm_rss_mb(os.getpid()))
        for pid in self._worker_pids():
            self.workers[pid] = max(self.workers.get(pid, 0.0), vm_hwm_mb(pid))

    @staticmethod
    def _worker_pids() -> list[int]:
        pids = []
        for pid in child_pids(os.getpid()):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue  # the process ended between the listing and the read
            if b"forkserver" in cmdline:
                pids += child_pids(pid)
            elif b"spawn_main" in cmdline:
                pids.append(pid)
        return pids

    def run(self) -> None:
        while not self._done.wait(self.every):
            self._sample()

    def stop(self) -> None:
        self._sample()
        self._done.set()
        self.join()


def _extract_child(runs: list[dict], results) -> None:
    """Runs the extractions one after the other and sends each one's figures as it ends.

    A failure is sent as its message, never dropped.
    """
    os.environ["TQDM_DISABLE"] = "1"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("data_manifests").setLevel(logging.ERROR)  # the bench trees lack EXPR/AU on purpose
    try:
        import keras  # noqa: F401  (once, before the runs: a run's work must not share its cores with the import)

        import extract.pipeline as pipeline

        # The summary times the whole call; "work_seconds" (first frame decoded to last row written) the work.
        for index, kwargs in enumerate(runs):
            peaks = _Peaks()
            peaks.start()
            try:
                summary = pipeline.run_extract(pipeline.ExtractConfig(**kwargs))
            finally:
                peaks.stop()
            workers = list(peaks.workers.values())
            if index == 0:  # nothing ran before: the kernel's exact high-water marks are this run's
                workers.append(peak_rss_mb(resource.RUSAGE_CHILDREN))
            results.put(
                {
                    "frames": summary["frames"],
                    "faces": summary["faces"],
                    "failed": summary["failed"],
                    "detected_frames": summary["detected_frames"],
                    "seconds": summary["seconds"],
                    "seconds_with_audio": summary.get("seconds_with_audio", summary["seconds"]),
                    "loop_seconds": summary.get("loop_seconds", 0.0),
                    "work_seconds": summary.get("work_seconds", 0.0),
                    "first_frame_s": summary.get("first_frame_s", 0.0),
                    "peak_rss_mb_main": peak_rss_mb() if index == 0 else peaks.main,
                    "rss_mb_main_sampled": peaks.main,
                    "peak_rss_mb_worker": max(workers, default=0.0),
                    "workers_seen": len(peaks.workers),
                    "data_root": kwargs["data_root"],
                }
            )
    except Exception as err:  # the parent raises it with this message: nothing is swallowed
        results.put({"error": f"{type(err).__name__}: {err}"})
        raise


def extract_in_child(runs: list[dict]) -> list[dict]:
    """``run_extract(ExtractConfig(**kwargs))`` for each of ``runs``, in order, in one fresh process,
    each from an empty ``cache_dir``.

    Returns, per run: frames, faces, total and job-loop seconds, and the peak memory of the run's
    main process (the first run: ``RUSAGE_SELF``; later ones: sampled ``VmRSS``) and of its
    largest worker.
    """
    for run in runs:  # a kept --workdir holds the caches of an earlier bench: each run extracts anew
        shutil.rmtree(run["cache_dir"], ignore_errors=True)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_extract_child, args=(runs, results))  # not daemonic: it starts workers
    proc.start()
    out = []
    while len(out) < len(runs):
        try:
            got = results.get(timeout=2.0)
        except queue_lib.Empty:
            if not proc.is_alive():
                raise RuntimeError(
                    f"the extraction process died (exit code {proc.exitcode}) on {runs[len(out)]['data_root']}"
                ) from None
            continue
        root = runs[len(out)]["data_root"]
        if "error" in got:
            proc.join()
            raise RuntimeError(f"extraction of {root} failed: {got['error']}")
        if got["failed"] or not got["frames"]:
            raise RuntimeError(f"extraction of {root} lost videos: {got['failed'] or 'no frames'}")
        out.append(got)
    proc.join()
    return out


def _video_kwargs(cfg: BenchConfig, root: Path, cache: Path) -> dict:
    return dict(
        dataset="affwild2",
        data_root=str(root),
        cache_dir=str(cache),
        input="video",
        backbone=cfg.backbone,
        weights=cfg.weights,
        precision=cfg.precision,
        detector=cfg.detector,
        detect_every=1,  # detection on every frame; the keyframes run sets its interval
        workers=cfg.workers,
        batch=cfg.batch,
    )


def _rates(run: dict) -> tuple[float, float]:
    # The steady rate runs from the first decoded frame (the workers start while the backbone
    # loads) to the last row written; the total from the call's start.
    work = run.get("work_seconds") or run["loop_seconds"]
    return round(run["frames"] / work, 1), round(run["frames"] / run["seconds"], 1)


def _video_figures(cfg: BenchConfig, run: dict) -> dict:
    steady, total = _rates(run)
    log.info(
        "end_to_end_fps: %d videos, %d frames, %d workers: %.1f frames/s in the loop, %.1f overall",
        cfg.videos,
        run["frames"],
        cfg.workers,
        steady,
        total,
    )
    return {
        "end_to_end_fps": steady,
        "end_to_end_fps_total": total,
        "end_to_end_frames": run["frames"],
        "end_to_end_startup_s": round(run["seconds"] - (run.get("work_seconds") or run["loop_seconds"]), 2),
        "end_to_end_first_frame_s": run.get("first_frame_s", 0.0),
        "face_hit_rate": round(run["faces"] / run["frames"], 4),
        "peak_rss_mb": round(max(run["peak_rss_mb_main"], run["peak_rss_mb_worker"]), 1),
        "peak_rss_mb_main": round(run["peak_rss_mb_main"], 1),
        "peak_rss_mb_worker": round(run["peak_rss_mb_worker"], 1),
    }


def _memory_figures(cfg: BenchConfig, key: str, run: dict) -> dict:
    log.info(
        "memory %s: %d frames per video: main %.0f MiB, worker %.0f MiB",
        key,
        run["frames"] // cfg.workers,
        run["rss_mb_main_sampled"],
        run["peak_rss_mb_worker"],
    )
    main = run["rss_mb_main_sampled"]  # sampled in both runs alike: the first run's exact mark is not
    return {
        f"peak_rss_mb_{key}": round(max(main, run["peak_rss_mb_worker"]), 1),
        f"peak_rss_mb_main_{key}": round(main, 1),
        f"peak_rss_mb_worker_{key}": round(run["peak_rss_mb_worker"], 1),
        f"frames_per_video_{key}": run["frames"] // cfg.workers,
        f"end_to_end_fps_{key}": _rates(run)[0],
    }


def _frames_figures(run: dict) -> dict:
    steady, total = _rates(run)
    log.info("end_to_end_frames_fps: %d frames: %.1f frames/s in the loop, %.1f overall", run["frames"], steady, total)
    return {
        "end_to_end_frames_fps": steady,
        "end_to_end_frames_fps_total": total,
        "end_to_end_frames_frames": run["frames"],
    }


def _keyframe_figures(cfg: BenchConfig, run: dict) -> dict:
    steady, _ = _rates(run)
    log.info(
        "end_to_end_keyframe_fps: detect every %d frames: %.1f frames/s in the loop, detector on %d of %d frames",
        cfg.detect_every,
        steady,
        run["detected_frames"],
        run["frames"],
    )
    return {
        "end_to_end_keyframe_fps": steady,
        "face_hit_rate_keyframe_e2e": round(run["faces"] / run["frames"], 4),
        "detected_share_keyframe_e2e": round(run["detected_frames"] / run["frames"], 4),
    }


def extraction(
    cfg: BenchConfig,
    workdir: Path,
    clip: Path,
    video: bool = True,
    memory: bool = True,
    frames: bool = True,
    keyframes: bool = False,
) -> dict:
    """The end-to-end runs, in one process (its start-up is paid once), in this order:

    * ``video``: ``cfg.videos`` copies of the real clip in an Aff-Wild2 tree, video mode. First,
      so that its peak memory is that of a fresh process.
    * ``keyframes``: the same tree with ``detect_every=cfg.detect_every``.
    * ``memory``: one video per worker, then one ``cfg.long_factor`` times longer per worker; both
      written by the same encoder (mp4v), so that only their length differs. When the video run
      is already one mp4v clip per worker (``clip_frames`` set, ``videos == workers``), it is the
      1x run.
    * ``frames``: the synthetic dataset's pre-cropped frames (``cropped_aligned``), frames mode.
    """
    runs, tags = [], []
    if video or keyframes:
        names = [f"clip{i:03d}" for i in range(cfg.videos)]
        root = affwild2_tree(workdir / "e2e" / "data", clip, names)
    if video:
        runs.append(_video_kwargs(cfg, root, workdir / "e2e" / "cache"))
        tags.append("video")
    if keyframes:
        runs.append({**_video_kwargs(cfg, root, workdir / "e2e" / "cache_keyframes"), "detect_every": cfg.detect_every})
        tags.append("keyframes")
    # The video run is the 1x run when it is one mp4v clip per worker (a cut clip is mp4v already).
    reuse = video and memory and cfg.clip_frames > 0 and cfg.videos == cfg.workers
    if memory:
        for key, times in (("1x", 1), ("10x", cfg.long_factor)):  # the key names; long_factor is recorded
            if key == "1x" and reuse:
                continue
            long = repeat_clip(clip, workdir / "memory" / f"{key}.mp4", times=times)
            root = affwild2_tree(workdir / "memory" / key, long, [f"long{i:03d}" for i in range(cfg.workers)])
            runs.append(_video_kwargs(cfg, root, workdir / "memory" / f"cache_{key}"))
            tags.append(key)
    if frames:
        from data_manifests.synthetic import generate

        root = workdir / "synthetic"
        lengths = (20, 30) if cfg.quick else (100, 140)
        generate(
            root,
            seed=cfg.seed,
            n_clips=cfg.synthetic_clips,
            min_frames=lengths[0],
            max_frames=lengths[1],
            raw_videos=0,
            workers=cfg.workers,
        )
        runs.append(
            dict(
                dataset="synthetic",
                data_root=str(root),
                cache_dir=str(workdir / "synthetic_cache"),
                input="frames",
                backbone=cfg.backbone,
                weights=cfg.weights,
                precision=cfg.precision,
                workers=cfg.workers,
                batch=cfg.batch,
            )
        )
        tags.append("frames")
    out = {"long_factor": cfg.long_factor} if memory else {}
    for tag, run in zip(tags, extract_in_child(runs) if runs else []):
        if tag == "video":
            out.update(_video_figures(cfg, run))
            if reuse:
                out.update(_memory_figures(cfg, "1x", run))
        elif tag == "frames":
            out.update(_frames_figures(run))
        elif tag == "keyframes":
            out.update(_keyframe_figures(cfg, run))
        else:
            out.update(_memory_figures(cfg, tag, run))
    return out
