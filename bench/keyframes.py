"""Keyframe detection against per-frame detection on the real test media: hits and boxes.

Both pass every frame through the same :class:`extract.faces.SubjectTracker`, as stage one does,
so what is compared is what ends up in the cache: whether a frame has a face (``face_mask``) and
its box. The face-hit rate is faces over frames; IoU is taken on the frames where both have one.

Example::

    quality(sorted(Path("tests/media").glob("*.m[po][4v]")), every=10)["keyframe_iou_mean"]
    # 0.967
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MEDIA_VIDEOS = ("single_face.mp4", "no_face.mp4", "face_noface.mov", "noface_face.mov", "WolfgangLanger_Pexels.mp4")


def media_videos(clip: Path, quick: bool = False) -> list[Path]:
    """The test media's videos when ``clip`` is one of them (``--quick``: only ``clip``), else ``clip``."""
    if quick or clip.name not in MEDIA_VIDEOS:
        return [clip]
    return [clip.with_name(name) for name in MEDIA_VIDEOS if clip.with_name(name).is_file()]


def _faces(frames: list, detector, every: int) -> tuple[list, float, int]:
    from extract.faces import SubjectTracker
    from extract.keyframes import KeyframeDetector

    faces = KeyframeDetector(detector, every)  # every=1: the detector on every frame
    tracker = SubjectTracker()
    start = time.perf_counter()
    chosen = [tracker.update(found, rgb.shape[1]) for _, rgb, found in faces.stream(enumerate(frames))]
    detected = faces.stats["detected"]
    return chosen, time.perf_counter() - start, detected


def quality(videos: list[Path], every: int, detector_name: str = "full+short") -> dict:
    """Face-hit rates and box IoU of ``detect_every=every`` against every frame, over ``videos``.

    Returns flat figures: ``keyframe_every``, ``keyframe_frames``, ``face_hit_rate_every_frame``,
    ``face_hit_rate_keyframes``, ``keyframe_hit_rate_gap`` (absolute difference),
    ``keyframe_iou_mean``, ``keyframe_iou_p5``, ``keyframe_iou_below_0_9`` (share of frames),
    ``keyframe_detected_share`` (detector calls per frame), ``keyframe_detect_speedup`` (detection
    time alone, decoded frames in memory, one process) and ``keyframe_videos`` (per video).
    """
    from extract.faces import FaceDetector, box_iou
    from extract.sources import iter_video

    per_video, ious = {}, []
    totals = dict(frames=0, hits_ref=0, hits_key=0, seconds_ref=0.0, seconds_key=0.0, detected=0)
    with FaceDetector(detector_name) as detector:
        for path in videos:
            frames = [rgb for _, rgb in iter_video(path)]
            ref, seconds_ref, _ = _faces(frames, detector, 1)
            key, seconds_key, detected = _faces(frames, detector, every)
            both = [box_iou(r.box, k.box) for r, k in zip(ref, key) if r is not None and k is not None]
            ious += both
            hits_ref, hits_key = sum(r is not None for r in ref), sum(k is not None for k in key)
            per_video[Path(path).name] = {
                "frames": len(frames),
                "hits_every_frame": hits_ref,
                "hits_keyframes": hits_key,
                "iou_mean": round(float(np.mean(both)), 4) if both else None,
                "detected": detected,
            }
            for name, value in zip(totals, (len(frames), hits_ref, hits_key, seconds_ref, seconds_key, detected)):
                totals[name] += value
    n = max(totals["frames"], 1)
    out = {
        "keyframe_every": every,
        "keyframe_frames": totals["frames"],
        "face_hit_rate_every_frame": round(totals["hits_ref"] / n, 4),
        "face_hit_rate_keyframes": round(totals["hits_key"] / n, 4),
        "keyframe_hit_rate_gap": round(abs(totals["hits_ref"] - totals["hits_key"]) / n, 4),
        "keyframe_iou_mean": round(float(np.mean(ious)), 4) if ious else 0.0,
        "keyframe_iou_p5": round(float(np.percentile(ious, 5)), 4) if ious else 0.0,
        "keyframe_iou_below_0_9": round(float(np.mean(np.array(ious) < 0.9)), 4) if ious else 0.0,
        "keyframe_detected_share": round(totals["detected"] / n, 4),
        "keyframe_detect_speedup": round(totals["seconds_ref"] / max(totals["seconds_key"], 1e-9), 2),
        "keyframe_videos": per_video,
    }
    log.info(
        "keyframes every %d on %d frames: hit rate %.4f vs %.4f every frame, IoU mean %.3f, "
        "detector on %.1f%% of frames, detection %.2fx faster",
        every,
        n,
        out["face_hit_rate_keyframes"],
        out["face_hit_rate_every_frame"],
        out["keyframe_iou_mean"],
        100 * out["keyframe_detected_share"],
        out["keyframe_detect_speedup"],
    )
    return out
