"""BlazeFace on LiteRT: mediapipe 0.10.21's face detection graphs, without mediapipe's runtime.

mediapipe's legacy ``FaceDetection`` solution costs 7.8-7.9 core-ms a call for the full-range
model on the 2-core VM, of which the model itself is 4.2 (docs/benchmarks.md); the rest is its graph
and its Python bindings. :class:`BlazeFaceModel` runs the very ``.tflite`` files of the mediapipe
wheel with ``ai-edge-litert`` (XNNPACK, one thread) and does what the graph does around them, step
for step: the letterboxed ``warpPerspective`` into the model's square input (``ImageToTensor``,
zero borders, values in [-1, 1]), SSD anchors, box and keypoint decoding, the sigmoid score and its
threshold (``TensorsToDetections``), weighted non-maximum suppression (``NonMaxSuppression``,
IoU 0.3) and the projection back to the frame. On every frame of the real test media both models
return the same faces as mediapipe, boxes and keypoints within 2e-4 pixels, scores within 1.2e-7
(``tests/test_blazeface.py``), at 5.0 core-ms a call for full range instead of 7.9.

The models are read from the installed mediapipe package without importing it (its import costs
about a second and pulls in its runtime).

Example::

    model = BlazeFaceModel("full")
    faces = model.detect(rgb)            # [(box, score, keypoints), ...] in pixels, best first
    faces[0][0]
    # array([299.50..., 103.35..., 544.57..., 348.42...], dtype=float32)
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter

_F = np.float32


@dataclass(frozen=True)
class BlazeFaceSpec:
    """One mediapipe face detection graph (``modules/face_detection/face_detection_*.pbtxt``)."""

    file: str
    side: int  # the model's square input
    strides: tuple[int, ...]  # SSD anchor layers
    interpolated: bool  # a second anchor per cell and layer (interpolated_scale_aspect_ratio 1.0)
    # The graph's own min_score_thresh. mediapipe 0.10.21's solution does not pass its
    # min_detection_confidence through to it (measured: 0.3, 0.5, 0.65 and 0.7 return the same faces).
    floor: float


SPECS: dict[str, BlazeFaceSpec] = {
    "short": BlazeFaceSpec("face_detection_short_range.tflite", 128, (8, 16, 16, 16), True, 0.5),
    "full": BlazeFaceSpec("face_detection_full_range_sparse.tflite", 192, (4,), False, 0.6),
}
NMS_IOU = _F(0.3)
SCORE_CLIP = _F(100.0)


class ModelFileError(RuntimeError):
    """The mediapipe package that ships the model files is missing or incomplete."""


def model_path(spec: BlazeFaceSpec) -> Path:
    """The ``.tflite`` file inside the installed mediapipe package (found, not imported)."""
    found = importlib.util.find_spec("mediapipe")
    folders = list(found.submodule_search_locations or []) if found is not None else []
    for folder in folders:
        path = Path(folder) / "modules" / "face_detection" / spec.file
        if path.is_file():
            return path
    raise ModelFileError(
        f"BlazeFace model {spec.file} not found: it ships in the mediapipe wheel; run `make setup` (mediapipe==0.10.21)"
    )


def ssd_anchors(spec: BlazeFaceSpec) -> np.ndarray:
    """Anchor centres ``float32 [N, 2]`` (x, y), in mediapipe's order: layers of equal stride share
    one grid, and each cell holds their anchors one after the other (fixed size 1: no widths)."""
    centres, layer = [], 0
    while layer < len(spec.strides):
        last = layer
        while last < len(spec.strides) and spec.strides[last] == spec.strides[layer]:
            last += 1
        per_cell = (last - layer) * (2 if spec.interpolated else 1)
        cells = int(np.ceil(spec.side / spec.strides[layer]))
        grid = (np.arange(cells, dtype=np.float32) + _F(0.5)) / _F(cells)
        y, x = np.meshgrid(grid, grid, indexing="ij")
        centres.append(np.repeat(np.stack([x.ravel(), y.ravel()], 1), per_cell, axis=0))
        layer = last
    return np.concatenate(centres).astype(np.float32)


class BlazeFaceModel:
    """One BlazeFace model (``"full"`` or ``"short"``) on LiteRT.

    Args:
        model: a key of :data:`SPECS`.
        min_score: faces scoring less are dropped; the graph's own floor (0.6 full range, 0.5 short
            range) holds below it, as in mediapipe.
        num_threads: LiteRT threads (1: the decode workers are one per core).
    """

    def __init__(self, model: str, min_score: float = 0.5, num_threads: int = 1):
        self.spec = SPECS[model]
        self.min_score = _F(max(float(min_score), self.spec.floor))
        self._interpreter = Interpreter(model_path=str(model_path(self.spec)), num_threads=num_threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = self._interpreter.get_output_details()
        self._boxes = next(o["index"] for o in outputs if o["shape"][-1] == 16)
        self._scores = next(o["index"] for o in outputs if o["shape"][-1] == 1)
        self.anchors = ssd_anchors(self.spec)
        # ImageToTensor's convertTo(CV_32F, 2/255, -1), as one table: the input is uint8.
        scale = _F(2.0) / _F(255.0)
        self._to_float = (np.arange(256) * float(scale) - 1.0).astype(np.float32).reshape(1, 256)

    def detect(self, frame_rgb: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """``(box, score, keypoints)`` of each face, best first: ``float32 [4]`` x0, y0, x1, y1 and
        ``float32 [6, 2]`` in pixels of ``frame_rgb`` (``uint8 [H, W, 3]``, contiguous)."""
        height, width = frame_rgb.shape[:2]
        side = _F(max(width, height))  # the letterboxed square around the frame
        tensor = self._letterbox(frame_rgb, side)
        self._interpreter.set_tensor(self._input, tensor[None])
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._boxes)[0]
        logits = np.clip(self._interpreter.get_tensor(self._scores)[0, :, 0], -SCORE_CLIP, SCORE_CLIP)
        with np.errstate(over="ignore"):  # exp(100) is inf in float32: its sigmoid is 0, as in C++
            scores = _F(1.0) / (_F(1.0) + np.exp(-logits))
        keep = np.flatnonzero(scores >= self.min_score)
        if not len(keep):
            return []
        boxes, keypoints = self._decode(raw[keep], self.anchors[keep])
        valid = (boxes[:, 2] >= 0) & (boxes[:, 3] >= 0)
        keep, boxes, keypoints = keep[valid], boxes[valid], keypoints[valid]
        order = np.argsort(-scores[keep], kind="stable")
        faces = weighted_nms(boxes[order], scores[keep][order], keypoints[order])
        return [self._to_frame(box, score, points, width, height, side) for box, score, points in faces]

    def _letterbox(self, frame_rgb: np.ndarray, side: np.float32) -> np.ndarray:
        height, width = frame_rgb.shape[:2]
        size = self.spec.side
        corners = cv2.boxPoints(((width / 2, height / 2), (float(side), float(side)), 0.0))
        target = np.array([[0, size], [0, 0], [size, 0], [size, size]], np.float32)
        matrix = cv2.getPerspectiveTransform(corners, target)
        square = cv2.warpPerspective(frame_rgb, matrix, (size, size), flags=cv2.INTER_LINEAR)
        return cv2.LUT(square, self._to_float)

    def _decode(self, raw: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Relative boxes ``[N, 4]`` (xmin, ymin, width, height) and keypoints ``[N, 6, 2]``."""
        size = _F(self.spec.side)
        x_centre = raw[:, 0] / size + anchors[:, 0]
        y_centre = raw[:, 1] / size + anchors[:, 1]
        half_w, half_h = raw[:, 2] / size / _F(2.0), raw[:, 3] / size / _F(2.0)
        x0, y0 = x_centre - half_w, y_centre - half_h
        x1, y1 = x_centre + half_w, y_centre + half_h
        keypoints = raw[:, 4:16].reshape(-1, 6, 2) / size + anchors[:, None, :]
        return np.stack([x0, y0, x1 - x0, y1 - y0], 1), keypoints

    @staticmethod
    def _to_frame(box, score, points, width: int, height: int, side: np.float32):
        """The letterbox's projection (DetectionProjection), then pixels as mediapipe's Python API
        reads them: relative float32 values times the frame size."""
        size = np.array([width, height], np.float32)
        scale = side / size  # the square's side over the frame's, per axis
        offset = (_F(-0.5) * side + size / _F(2.0)) / size  # where the square starts, per axis
        low = box[:2] * scale + offset
        extent = (box[:2] + box[2:]) * scale + offset - low
        x0, y0 = float(low[0]) * width, float(low[1]) * height
        pixels = np.array([x0, y0, x0 + float(extent[0]) * width, y0 + float(extent[1]) * height], np.float32)
        return pixels, float(score), (points * scale + offset) * size

    def close(self) -> None:
        self._interpreter = None


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray) -> list[tuple]:
    """mediapipe's WEIGHTED non-maximum suppression on boxes sorted by score, best first: each kept
    face is the score-weighted mean of every remaining box whose IoU with the best one exceeds 0.3
    (itself included), with the best one's score. Returns ``(box, score, keypoints)`` triples, best first."""
    corners = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)
    area = boxes[:, 2] * boxes[:, 3]
    flat = np.concatenate([corners, keypoints.reshape(len(boxes), -1)], 1)
    remaining, faces = np.arange(len(boxes)), []
    while len(remaining):
        best = remaining[0]
        low = np.maximum(corners[remaining, :2], corners[best, :2])
        high = np.minimum(corners[remaining, 2:], corners[best, 2:])
        extent = high - low
        inter = np.where((extent >= 0).all(1), extent[:, 0] * extent[:, 1], _F(0.0))
        union = area[remaining] + area[best] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        close = iou > NMS_IOU
        if not close.any():  # a box of no area overlaps nothing, not even itself: mediapipe keeps it and stops
            faces.append((boxes[best], scores[best], keypoints[best]))
            break
        members = remaining[close]
        weights = scores[members]
        mean = (flat[members] * weights[:, None]).sum(0, dtype=np.float32) / weights.sum(dtype=np.float32)
        box = np.array([mean[0], mean[1], mean[2] - mean[0], mean[3] - mean[1]], np.float32)
        faces.append((box, scores[best], mean[4:].reshape(-1, 2)))
        remaining = remaining[~close]
    return faces
