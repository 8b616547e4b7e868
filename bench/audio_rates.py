"""The audio stage: seconds of audio per second, per core, for each extractor; and stage one with
``AUDIO=logmel`` against visual only.

Per core: one process decodes the clip's own track (PyAV, resampled to 16 kHz), computes the
extractor's rows and pools them onto the clip's frames (``extract.audio_run.run_job``, what a
worker does), over and over for at least ``min_seconds``. Stage one: the end-to-end tree (copies of
the real clip, with their audio tracks), extracted once with the backbone only and once with the
backbone and ``AUDIO=logmel``, each in a fresh process; the rate is frames over the whole call.
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing as mp
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.common import BenchConfig, affwild2_tree
from bench.end_to_end import extract_in_child

log = logging.getLogger(__name__)


def per_core(clip: Path, name: str, min_seconds: float) -> float:
    """x real time of one process extracting ``name`` from ``clip``'s audio track."""
    from extract.audio_run import AudioJob, audio_meta, run_job

    meta = audio_meta(name)
    job = AudioJob(str(clip), str(clip), 0, 30.0, ("bench",))
    audio_seconds, start = 0.0, time.perf_counter()
    with tempfile.TemporaryDirectory() as parts:
        run_job(job, name, meta, parts)  # imports and first calls out of the timing
        start = time.perf_counter()
        while time.perf_counter() - start < min_seconds:
            result = run_job(job, name, meta, parts)
            if "error" in result:
                raise RuntimeError(f"audio bench: {result['error']}")
            audio_seconds += result["audio_seconds"]
    return round(audio_seconds / (time.perf_counter() - start), 1)


def _in_fresh_process(clip: Path, name: str, min_seconds: float) -> float:
    # As in a real run (extract.audio_run's spawned workers): no TensorFlow in the process. openSMILE's
    # library aborts in a process that has loaded it (malloc: invalid size), and this one has (machine_info).
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(per_core, clip, name, min_seconds).result()


AUDIO_VIDEOS = 4


def audio_rates(cfg: BenchConfig, workdir: Path, clip: Path) -> dict:
    figures = {"audio_logmel_x_per_core": _in_fresh_process(clip, "logmel", cfg.min_seconds)}
    if importlib.util.find_spec("opensmile"):
        figures["audio_egemaps_x_per_core"] = _in_fresh_process(clip, "egemaps", cfg.min_seconds)
    # Four times the end-to-end copies: the run pays librosa's import once (about 1.6 s, in the
    # workers' fork server, before the first frame), a start-up cost the rate of a real dataset does not see.
    n = AUDIO_VIDEOS * cfg.videos
    root = affwild2_tree(workdir / "audio" / "data", clip, [f"clip{i:03d}" for i in range(n)])
    base = dict(dataset="affwild2", data_root=str(root), input="video", backbone=cfg.backbone, batch=cfg.batch)
    base.update(weights=cfg.weights, precision=cfg.precision, workers=cfg.workers)
    # Each in a fresh process, as a user's run: the workers' fork server preloads what its first run needs.
    (visual,) = extract_in_child([{**base, "cache_dir": str(workdir / "audio" / "visual")}])
    (both,) = extract_in_child([{**base, "cache_dir": str(workdir / "audio" / "both"), "audio": "logmel"}])
    figures["stage_one_visual_fps"] = round(visual["frames"] / visual["seconds"], 1)
    figures["stage_one_audio_visual_fps"] = round(both["frames"] / both["seconds_with_audio"], 1)
    figures["stage_one_audio_frames"] = int(both["frames"])
    log.info(
        "audio: logmel %.0fx real time per core; stage one %.1f frames/s visual, %.1f with AUDIO=logmel",
        figures["audio_logmel_x_per_core"],
        figures["stage_one_visual_fps"],
        figures["stage_one_audio_visual_fps"],
    )
    return figures
