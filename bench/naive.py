"""The baseline: stage one written the way research code usually is, on the same clip.

Every frame is read into a Python list first, then each frame is run through BlazeFace and, when
a face is found, through one ``model.predict`` call on a batch of one, in one process. The face
work per frame is the pipeline's own (same detector, crop and resize), so the difference measured
is the design: no decode/detect processes, no batching, the whole video held in memory.

Example::

    naive_rate("tests/media/single_face.mp4", backbone, "full+short", max_frames=72)
    # {'naive_fps': 18.3, 'naive_frames': 72, 'naive_frames_list_mb': 47.5}
"""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np

log = logging.getLogger(__name__)


def naive_rate(clip: str, backbone, detector: str, max_frames: int, margin: float | None = None) -> dict:
    """Frames per second of the naive loop over the first ``max_frames`` frames of ``clip``.

    The detector and the model's first call (graph building) are set up before the clock starts,
    as they are for the pipeline's rate.

    Args:
        clip: the video. backbone: an ``extract.backbones.Backbone`` (its ``model`` is called).
        detector: an ``extract.faces.DETECTOR_MODELS`` name. max_frames: where to stop.
        margin: crop margin; None: the backbone's crop policy, as the pipeline's default.

    Returns:
        ``naive_fps``, ``naive_frames`` and the size of the frame list in MiB.
    """
    from extract.backbones import crop_policy, to_model_input
    from extract.faces import FaceDetector, crop_face

    margin = crop_policy(backbone.name).margin if margin is None else margin

    size = tuple(backbone.input_size)
    backbone.model.predict(np.zeros((1, *size), np.uint8), verbose=0)
    with FaceDetector(model=detector) as faces:
        start = time.perf_counter()
        capture = cv2.VideoCapture(str(clip))
        frames = []
        while len(frames) < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
        capture.release()
        embeddings = []
        for frame in frames:
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            found = faces.detect(rgb)
            if found:
                crop = to_model_input(crop_face(rgb, found[0], size[:2], margin=margin), size)
                embeddings.append(backbone.model.predict(crop[None], verbose=0)[0])
            else:
                embeddings.append(np.zeros(backbone.embedding_dim, np.float32))
        seconds = time.perf_counter() - start
    if not frames:
        raise RuntimeError(f"{clip}: no frame decoded; check the video with ffprobe")
    held = sum(f.nbytes for f in frames) / 2**20
    log.info(
        "naive_fps: %d frames, one predict per face: %.1f frames/s (frame list %.0f MiB)",
        len(frames),
        len(frames) / seconds,
        held,
    )
    return {
        "naive_fps": round(len(frames) / seconds, 1),
        "naive_frames": len(frames),
        "naive_frames_list_mb": round(held, 1),
    }
