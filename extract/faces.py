"""Faces in raw video: BlazeFace detection, one track per subject, square (aligned) crops.

* :class:`FaceDetector` runs mediapipe 0.10.21's bundled BlazeFace models on LiteRT
  (``extract.blazeface``: the same faces as mediapipe's own graph, at 5.0 instead of 7.9 core-ms a
  call). The models are a registry, :data:`DETECTOR_MODELS`: ``short`` (faces within ~2 m, large in the
  frame), ``full`` (full range: small and several faces) and ``full+short`` (full range, and the
  short-range model on the frames where full range finds nothing). Measured on the real test
  media: full range misses a close-up face half hidden behind a hand on 25 of the 472 frames of
  WolfgangLanger_Pexels.mp4, which short range all finds; short range misses a 111-pixel face in
  a 1280-pixel frame and finds 3 of the 5 faces of multi_face.jpg (full range: all 5).
  ``full+short`` gets the hits of both and runs the second model only on frames without a face
  (about a third slower there), hence the default. Its price: the false positives of both models
  on faceless frames (6 of the 95 frames of no_face.mp4 instead of 4).
* :class:`SubjectTracker` picks one face per subject per frame (largest, or the one continuing the
  track, or the one on the subject's side for two-subject videos).
* :func:`crop_face` cuts a square around the face, optionally rotated so that the eyes are level.
* :data:`FACE_POLICY` is what a frame without a face becomes in the cache.

Detectors hold LiteRT interpreters: make one per worker process (they do not pickle).

Example::

    with FaceDetector() as detector:
        tracker = SubjectTracker()
        for frame_index, rgb in iter_video("tests/media/single_face.mp4"):
            face = tracker.update(detector.detect(rgb), rgb.shape[1])
            if face is not None:
                crop = crop_face(rgb, face, (64, 64), align=True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

FACE_POLICY = "no face: row kept, face_mask=False, embedding zeros, bbox zeros, score 0"

# Name -> the BlazeFace models (extract.blazeface.SPECS), tried in order until one finds a face.
DETECTOR_MODELS: dict[str, tuple[str, ...]] = {
    "short": ("short",),
    "full": ("full",),
    "full+short": ("full", "short"),
}
DEFAULT_DETECTOR = "full+short"
_MODEL_NAMES = {"short": "short-range", "full": "full-range"}

SIDES = ("", "left", "right")

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")


@dataclass(frozen=True, eq=False)
class Detection:
    """One detected face, in pixels of the frame it was found in.

    Args:
        box: ``float32 [4]``: x0, y0, x1, y1. BlazeFace boxes are square and may extend past the
            frame edges; they are not clipped.
        score: detector confidence in [0, 1].
        keypoints: ``float32 [6, 2]`` (x, y) in :data:`KEYPOINT_NAMES` order, mediapipe's: the
            subject's right eye (on the image's left for an upright, unmirrored face), left eye,
            nose tip, mouth centre, right ear tragion, left ear tragion.
    """

    box: np.ndarray
    score: float
    keypoints: np.ndarray

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))

    @property
    def centre_x(self) -> float:
        return float(self.box[0] + self.box[2]) / 2.0


class FaceDetector:
    """BlazeFace (mediapipe 0.10.21's models, on LiteRT), on RGB frames of any size.

    Args:
        model: a key of :data:`DETECTOR_MODELS`: ``"full+short"`` (default), ``"full"`` or
            ``"short"``.
        min_score: detections below this confidence are dropped. Each model keeps its graph's own
            floor below it (0.6 full range, 0.5 short range). (mediapipe's own solution ignored
            min_score: its graphs kept those floors whatever it was.)

    Example::

        with FaceDetector("full", min_score=0.5) as detector:
            faces = detector.detect(rgb)
        faces[0].box, faces[0].score
        # (array([162., 176., 381., 395.], dtype=float32), 0.89)
    """

    def __init__(self, model: str = DEFAULT_DETECTOR, min_score: float = 0.5):
        if model not in DETECTOR_MODELS:
            raise ValueError(f"unknown face detector model '{model}'; valid: {', '.join(DETECTOR_MODELS)}")
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {min_score}")
        from extract.blazeface import BlazeFaceModel

        self.model = model
        self.min_score = float(min_score)
        self._models = [BlazeFaceModel(name, min_score) for name in DETECTOR_MODELS[model]]

    @property
    def description(self) -> str:
        """One line for logs and reports."""
        models = ", then ".join(_MODEL_NAMES[s] for s in DETECTOR_MODELS[self.model])
        if len(DETECTOR_MODELS[self.model]) > 1:
            models += " on frames where the first finds no face"
        return f"BlazeFace '{self.model}' (mediapipe 0.10.21's models on LiteRT; {models}), min_score {self.min_score}"

    def detect(self, frame_rgb: np.ndarray) -> list[Detection]:
        """Finds the faces in one frame.

        Args:
            frame_rgb: ``uint8 [H, W, 3]`` RGB.

        Returns:
            The detections, highest score first; empty when there is no face.
        """
        if self._models is None:
            raise RuntimeError("FaceDetector is closed")
        frame_rgb = np.asarray(frame_rgb)
        shape = frame_rgb.shape
        if frame_rgb.dtype != np.uint8 or len(shape) != 3 or shape[2] != 3 or 0 in shape:
            raise ValueError(f"expected an RGB uint8 frame [H, W, 3], got {frame_rgb.dtype} {shape}")
        frame_rgb = np.ascontiguousarray(frame_rgb)
        for model in self._models:
            found = model.detect(frame_rgb)
            if found:
                break
        return [Detection(box=box, score=score, keypoints=points) for box, score, points in found]  # best first

    def close(self) -> None:
        for model in self._models or []:
            model.close()
        self._models = None

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = float(width * height)
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


class SubjectTracker:
    """Chooses the face of one subject in each frame of a video.

    Rules, per frame:

    1. With a track (a face chosen in one of the last ``max_missed`` frames), the detection with
       the highest IoU with the last chosen box continues it, if that IoU is at least
       ``iou_threshold``. A subject keeps its track wherever it moves, across the midline too.
    2. Otherwise (no track, or no detection overlaps it enough): with ``side=""`` the largest
       face (box area); with ``side="left"`` the largest face whose box centre has
       ``x < frame_width / 2``, with ``side="right"`` the largest whose centre has
       ``x >= frame_width / 2``. A face in the other half is never picked by this rule, so that a
       lone visible person is not given to the wrong subject of an Aff-Wild2 two-subject video
       (``<video>_left`` is the person on the left of the image).
    3. No face chosen: ``None``. The track survives ``max_missed`` such frames, then is dropped.

    Args:
        side: ``""``, ``"left"`` or ``"right"``.
        iou_threshold: least IoU with the previous box for a detection to continue the track.
        max_missed: frames without a chosen face after which the track is forgotten.

    Example::

        tracker = SubjectTracker(side="left")
        face = tracker.update(detector.detect(rgb), frame_width=rgb.shape[1])
    """

    def __init__(self, side: str = "", iou_threshold: float = 0.3, max_missed: int = 5):
        if side not in SIDES:
            raise ValueError(f"unknown side '{side}'; valid: '', 'left', 'right'")
        self.side = side
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.reset()

    def reset(self) -> None:
        """Forgets the track (call between videos)."""
        self._box: np.ndarray | None = None
        self._missed = 0

    def _pick_new(self, detections: list[Detection], frame_width: int) -> Detection | None:
        half = frame_width / 2.0
        if self.side == "left":
            detections = [d for d in detections if d.centre_x < half]
        elif self.side == "right":
            detections = [d for d in detections if d.centre_x >= half]
        return max(detections, key=lambda d: d.area, default=None)

    def update(self, detections: list[Detection], frame_width: int) -> Detection | None:
        """Returns this frame's face of the subject, or ``None``.

        Args:
            detections: the frame's detections (any order).
            frame_width: the frame's width in pixels, for the side rule.
        """
        chosen = None
        if self._box is not None and detections:
            overlaps = [box_iou(self._box, d.box) for d in detections]
            best = int(np.argmax(overlaps))
            if overlaps[best] >= self.iou_threshold:
                chosen = detections[best]
        if chosen is None:
            chosen = self._pick_new(detections, frame_width)
        if chosen is None:
            self._missed += 1
            if self._missed > self.max_missed:
                self._box = None
            return None
        self._box = chosen.box
        self._missed = 0
        return chosen


def eye_angle(detection: Detection) -> float:
    """Angle (radians, image axes: y down) of the line from the right eye to the left eye."""
    (rx, ry), (lx, ly) = detection.keypoints[0], detection.keypoints[1]
    return math.atan2(float(ly - ry), float(lx - rx))


def crop_face(
    frame_rgb: np.ndarray,
    detection: Detection,
    size: tuple[int, int],
    margin: float = 0.25,
    align: bool = False,
) -> np.ndarray:
    """Cuts a square face crop, zero-padded where it leaves the frame.

    The square is centred on the box centre, with side ``max(box width, box height) * (1 + margin)``.
    Parts outside the frame are black (zeros), like the borders of Aff-Wild2's ``cropped_aligned``
    frames; edge replication would smear hair and background into streaks. With ``align=True``
    the square is rotated about its centre by the angle of the eye line, so that the eyes are
    level in the crop. Crop, rotation and resize are one ``cv2.warpAffine``; when the crop shrinks
    2x or more it is first reduced with ``INTER_AREA`` so that the result is not aliased.

    Args:
        frame_rgb: ``uint8 [H, W, 3]``.
        detection: the face, in pixels of ``frame_rgb``.
        size: ``(height, width)`` of the output.
        margin: extra side length, as a fraction of the box side.
        align: rotate so that the two eye keypoints are level.

    Returns:
        ``uint8 [size[0], size[1], 3]``.

    Example::

        crop_face(rgb, face, (112, 112), margin=0.25, align=True).shape
        # (112, 112, 3)
    """
    out_h, out_w = (int(v) for v in size)
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"crop size must be positive (height, width), got {size}")
    if margin <= -1.0:
        raise ValueError(f"margin must be > -1, got {margin}")
    x0, y0, x1, y1 = (float(v) for v in detection.box)
    side = max(x1 - x0, y1 - y0) * (1.0 + margin)
    if not side > 0:
        raise ValueError(f"empty face box {detection.box}")
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    angle = eye_angle(detection) if align else 0.0
    cos, sin = math.cos(angle), math.sin(angle)

    image = frame_rgb
    shrink = side / max(out_h, out_w)
    if shrink >= 2.0:
        image, cx, cy, side = _reduce_around(frame_rgb, cx, cy, side, abs(cos) + abs(sin), shrink)

    # Inverse map, output pixel (u, v) -> input pixel, with pixel centres at integer coordinates:
    # input = centre + R(angle) @ ((u + 0.5) * sx - side / 2, (v + 0.5) * sy - side / 2) - 0.5
    sx, sy = side / out_w, side / out_h
    ox, oy = 0.5 * sx - side / 2.0, 0.5 * sy - side / 2.0
    matrix = np.array(
        [
            [cos * sx, -sin * sy, cx - 0.5 + cos * ox - sin * oy],
            [sin * sx, cos * sy, cy - 0.5 + sin * ox + cos * oy],
        ],
        dtype=np.float64,
    )
    return cv2.warpAffine(
        np.ascontiguousarray(image),
        matrix,
        (out_w, out_h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def _reduce_around(frame, cx, cy, side, spread, shrink):
    """Cuts the region that holds the (rotated) crop, zero-padded, and shrinks it ``k = int(shrink)``
    times with INTER_AREA (exact k x k means, on a grid that starts at the crop's corner).

    Returns the reduced image and the crop centre and side in its coordinates; what is left for
    the affine warp is a scale in [1, 2), too small to alias.
    """
    k = int(shrink)
    reach = side / 2.0 * spread + 2.0
    corners = []
    for centre in (cx, cy):
        # Whole k-pixel blocks before the crop's corner, so that blocks line up with it.
        start = round(centre - side / 2.0) - k * math.ceil((reach - side / 2.0) / k)
        corners.append((start, k * math.ceil((centre + reach - start) / k)))
    (left, n_x), (top, n_y) = corners
    height, width = frame.shape[:2]
    fx0, fy0 = max(left, 0), max(top, 0)
    fx1, fy1 = min(left + n_x, width), min(top + n_y, height)
    if (fx0, fy0, fx1, fy1) == (left, top, left + n_x, top + n_y):
        region = frame[top : top + n_y, left : left + n_x]  # inside the frame: OpenCV reads the view, no copy
    else:
        region = np.zeros((n_y, n_x, 3), dtype=np.uint8)
        if fx1 > fx0 and fy1 > fy0:
            region[fy0 - top : fy1 - top, fx0 - left : fx1 - left] = frame[fy0:fy1, fx0:fx1]
    reduced = cv2.resize(region, (n_x // k, n_y // k), interpolation=cv2.INTER_AREA)
    return reduced, (cx - left) / k, (cy - top) / k, side / k
