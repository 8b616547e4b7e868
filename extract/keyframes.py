"""Detect faces on keyframes only and carry the boxes between them with optical flow.

BlazeFace is the slowest part of stage one's CPU side (decode alone runs ~5x faster). Faces move
little from one frame to the next, so :class:`KeyframeDetector` runs the detector on every
``every``-th frame and, in between, moves each face's box and keypoints with :class:`FaceFlow`:
corners inside the box are followed with pyramidal Lucas-Kanade, forward and back, and the
similarity transform (shift, scale, rotation) that most of them agree on moves the box. When the
flow loses a face (too few corners survive the forward-backward check, or they disagree, or the box
leaves the frame) the detector runs on that very frame instead: drift never lasts past the frame
where it shows, and every ``every`` frames the boxes are replaced by fresh detections anyway.

A frame between keyframes keeps the faces of the last detection. When that detection found no
face, the detector looks again ``faceless_every`` (2) frames later, so a face that comes into view
is found at most one frame late; a face it was unsure of (score under ``carry_min_score``, 0.7) is
never carried. The score of a carried face is its keyframe's score.

Example::

    with FaceDetector() as detector:
        faces = KeyframeDetector(detector, every=5)  # the default carry_min_score 0.7, faceless_every 2
        for frame_index, rgb in iter_video("tests/media/single_face.mp4"):
            found = faces.detect(rgb)          # a list of Detection, as FaceDetector.detect
    faces.stats
    # {'frames': 72, 'detected': 15, 'carried': 57, 'lost': 0}
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from extract.faces import Detection


@dataclass
class FaceTrack:
    """One face followed by :class:`FaceFlow`: where it is, and the flow's state on the last frame."""

    face: Detection
    roi: tuple[int, int, int, int] = (0, 0, 0, 0)  # x0, y0, x1, y1 of the patch, frame pixels
    stride: int = 1
    patch: np.ndarray | None = None  # grey patch of the last frame (every stride-th pixel)
    points: np.ndarray | None = None  # corners on the face in ``patch`` coordinates, [N, 1, 2]


class FaceFlow:
    """Moves faces from one frame to the next with sparse optical flow.

    The work happens on a grey patch around the face, subsampled so that the box is about
    ``work_side`` pixels wide: the cost depends neither on the frame size nor on the face size.
    The patch stays put while the face moves inside it (so each frame is converted once), and
    corners that followed the face well are followed again (Shi-Tomasi corners are picked anew only
    when too few are left).

    Args:
        work_side: box side, in patch pixels, the flow is computed at (at least).
        max_corners: corners picked inside the box.
        fb_max: largest forward-backward error, in patch pixels, for a corner to count.
        min_points: fewest corners that must survive the check and agree on the transform.
        max_scale_step: largest change of the box side from one frame to the next (factor).

    Example::

        frames = [rgb for _, rgb in iter_video("tests/media/single_face.mp4")]
        flow = FaceFlow()
        track = flow.start(frames[0], detector.detect(frames[0])[0])   # box [204.0, 113.0, 388.3, 297.3]
        [flow.step(track, frame) for frame in frames[1:4]]   # False: lost (re-detect)
        # [True, True, True]
        track.face.box
        # array([201.23354 , 109.858505, 385.2184  , 293.83047 ], dtype=float32)
    """

    def __init__(
        self,
        work_side: int = 64,
        max_corners: int = 32,
        fb_max: float = 1.0,
        min_points: int = 8,
        max_scale_step: float = 1.25,
    ):
        self.work_side = int(work_side)
        self.max_corners = int(max_corners)
        self.fb_max = float(fb_max)
        self.min_points = int(min_points)
        self.max_scale_step = float(max_scale_step)
        self._lk = dict(
            winSize=(11, 11), maxLevel=2, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)
        )

    @staticmethod
    def _patch(frame: np.ndarray, roi: tuple[int, int, int, int], stride: int) -> np.ndarray:
        x0, y0, x1, y1 = roi
        # Grey first (OpenCV reads the region in place), then every ``stride``-th pixel: a slice is
        # far cheaper than a resize, and the flow's own pyramid smooths what it aliases.
        grey = cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
        return np.ascontiguousarray(grey[::stride, ::stride]) if stride > 1 else grey

    def _frame_patch(self, frame: np.ndarray, box: np.ndarray) -> tuple | None:
        """The patch around ``box``: it reaches one box side beyond the face on every side."""
        height, width = frame.shape[:2]
        x0, y0, x1, y1 = (float(v) for v in box)
        side = max(x1 - x0, y1 - y0)
        if not side > 4:
            return None
        roi = (
            max(int(math.floor(x0 - side)), 0),
            max(int(math.floor(y0 - side)), 0),
            min(int(math.ceil(x1 + side)), width),
            min(int(math.ceil(y1 + side)), height),
        )
        if roi[2] - roi[0] < 8 or roi[3] - roi[1] < 8:
            return None
        stride = max(int(side // self.work_side), 1)
        return roi, stride, self._patch(frame, roi, stride)

    def _box_in_patch(self, track: FaceTrack, box: np.ndarray) -> np.ndarray:
        return (box.reshape(2, 2) - track.roi[:2]).ravel() / track.stride

    def _corners(self, track: FaceTrack) -> np.ndarray | None:
        h, w = track.patch.shape
        x0, y0, x1, y1 = self._box_in_patch(track, track.face.box)
        x0, y0, x1, y1 = max(int(x0), 0), max(int(y0), 0), min(int(x1), w), min(int(y1), h)
        if x1 - x0 < 4 or y1 - y0 < 4:
            return None
        mask = np.zeros_like(track.patch)
        mask[y0:y1, x0:x1] = 255
        return cv2.goodFeaturesToTrack(track.patch, self.max_corners, qualityLevel=0.01, minDistance=3, mask=mask)

    def start(self, frame: np.ndarray, face: Detection) -> FaceTrack | None:
        """Starts following ``face`` (a detection in ``frame``); ``None`` when it cannot be followed."""
        found = self._frame_patch(frame, face.box)
        if found is None:
            return None
        track = FaceTrack(face, *found)
        track.points = self._corners(track)
        return track

    def step(self, track: FaceTrack, frame: np.ndarray) -> bool:
        """Moves ``track`` into ``frame``, the next frame; ``False`` (track unchanged) when it is lost."""
        if track.points is None or len(track.points) < max(self.min_points, self.max_corners // 2):
            track.points = self._corners(track)
            if track.points is None or len(track.points) < self.min_points:
                return False
        after = self._patch(frame, track.roi, track.stride)
        moved, ok, _ = cv2.calcOpticalFlowPyrLK(track.patch, after, track.points, None, **self._lk)
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(after, track.patch, moved, None, **self._lk)
        fb_error = np.linalg.norm((track.points - back).reshape(-1, 2), axis=1)
        good = (ok.ravel() == 1) & (ok_back.ravel() == 1) & (fb_error < self.fb_max)
        if good.sum() < self.min_points:
            return False
        matrix, inliers = cv2.estimateAffinePartial2D(
            track.points[good], moved[good], method=cv2.RANSAC, ransacReprojThreshold=1.0
        )
        if matrix is None or int(inliers.sum()) < self.min_points:
            return False
        step_scale = math.hypot(matrix[0, 0], matrix[1, 0])
        if not 1 / self.max_scale_step <= step_scale <= self.max_scale_step:
            return False
        face = _moved(track.face, matrix, track.roi, track.stride, step_scale)
        height, width = frame.shape[:2]
        box = face.box
        if box[2] <= 0 or box[3] <= 0 or box[0] >= width or box[1] >= height:
            return False
        track.face = face
        points = moved[good][inliers.ravel() == 1].reshape(-1, 1, 2)
        x0, y0, x1, y1 = self._box_in_patch(track, box)
        inside = (points[:, 0, 0] >= x0) & (points[:, 0, 0] < x1) & (points[:, 0, 1] >= y0) & (points[:, 0, 1] < y1)
        track.points, track.patch = points[inside], after
        side = max(box[2] - box[0], box[3] - box[1])
        # A new patch when the face nears the patch's edge or its size no longer fits the stride.
        margin = side / 4
        rx0, ry0, rx1, ry1 = track.roi
        near_edge = (
            (box[0] - rx0 < margin and rx0 > 0)
            or (box[1] - ry0 < margin and ry0 > 0)
            or (rx1 - box[2] < margin and rx1 < width)
            or (ry1 - box[3] < margin and ry1 < height)
        )
        if near_edge or max(int(side // self.work_side), 1) != track.stride:
            found = self._frame_patch(frame, box)
            if found is None:
                return False
            track.roi, track.stride, track.patch = found
            track.points = None
        return True


def _moved(face: Detection, matrix: np.ndarray, roi: tuple, stride: int, step_scale: float) -> Detection:
    """Applies a patch-space similarity to a face given in frame pixels (the box stays axis-aligned)."""
    origin = np.array(roi[:2], np.float64)

    def to_frame(points: np.ndarray) -> np.ndarray:
        patch = (points - origin) / stride
        return (patch @ matrix[:, :2].T + matrix[:, 2]) * stride + origin

    box = face.box.astype(np.float64)
    centre = to_frame(((box[:2] + box[2:]) / 2)[None])[0]
    half = (box[2:] - box[:2]) * step_scale / 2
    keypoints = to_frame(face.keypoints.astype(np.float64)).astype(np.float32)
    return Detection(
        box=np.concatenate([centre - half, centre + half]).astype(np.float32), score=face.score, keypoints=keypoints
    )


class KeyframeDetector:
    """A face detector that runs on keyframes and carries the faces in between.

    Same ``detect`` as :class:`extract.faces.FaceDetector`, so the rest of stage one does not know
    which one it has. Make one per video: the first frame it sees is a keyframe.

    The detector runs on a frame when: it is a keyframe (``every`` frames after the last
    detection); the flow lost a face; the last detection found a face scoring under
    ``carry_min_score`` (an unsure face is not carried: BlazeFace's false positives on the test
    media score 0.5-0.7, real faces mostly above); or the last detection found no face and
    ``faceless_every`` frames have passed (a face that comes into view is found at most
    ``faceless_every - 1`` frames late).

    Args:
        detector: the per-frame detector (an open :class:`extract.faces.FaceDetector`).
        every: a keyframe every ``every`` frames; ``1`` detects on every frame.
        flow: the tracker between keyframes (default :class:`FaceFlow`).
        carry_min_score: faces scoring less are detected again on the next frame, not carried.
        faceless_every: after a detection without a face, the next one this many frames later.

    Example::

        faces = KeyframeDetector(detector, every=10)
        [len(faces.detect(rgb)) for _, rgb in iter_video("tests/media/single_face.mp4")][:3]
        # [1, 1, 1]
    """

    def __init__(
        self, detector, every: int, flow: FaceFlow | None = None, carry_min_score: float = 0.7, faceless_every: int = 2
    ):
        if int(every) < 1:
            raise ValueError(f"detect_every must be >= 1 (1: detect on every frame), got {every}")
        if int(faceless_every) < 1:
            raise ValueError(f"faceless_every must be >= 1, got {faceless_every}")
        self.detector = detector
        self.every = int(every)
        self.flow = flow or FaceFlow()
        self.carry_min_score = float(carry_min_score)
        self.faceless_every = min(int(faceless_every), self.every)
        self._tracks: list[FaceTrack] | None = None  # None: the next frame is detected
        self._since = 0  # frames since the last detection
        self.stats = {"frames": 0, "detected": 0, "carried": 0, "lost": 0}

    def _detect(self, frame: np.ndarray) -> list[Detection]:
        faces = self.detector.detect(frame)
        self._since = 0
        self.stats["detected"] += 1
        self._tracks = None
        if self.every > 1 and all(face.score >= self.carry_min_score for face in faces):
            tracks = [self.flow.start(frame, face) for face in faces]
            if all(track is not None for track in tracks):
                self._tracks = tracks
        return faces

    def detect(self, frame_rgb: np.ndarray) -> list[Detection]:
        """The faces of the next frame of the video, highest score first."""
        self.stats["frames"] += 1
        self._since += 1
        tracks = self._tracks
        if tracks is None or self._since >= self.every or (not tracks and self._since >= self.faceless_every):
            return self._detect(frame_rgb)
        if not tracks:
            return []
        if not all(self.flow.step(track, frame_rgb) for track in tracks):
            self.stats["lost"] += 1
            return self._detect(frame_rgb)
        self.stats["carried"] += 1
        return [track.face for track in tracks]
