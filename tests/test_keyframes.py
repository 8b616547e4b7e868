"""Keyframe detection: optical flow moves boxes exactly, the detector runs when it should, and on
the real test media the cache gets the faces and boxes of per-frame detection."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.keyframes import MEDIA_VIDEOS, quality
from extract.faces import Detection
from extract.keyframes import FaceFlow, KeyframeDetector

pytestmark = pytest.mark.slow  # trains or extracts for seconds: `-m 'not slow'` skips it

MEDIA = Path(__file__).parent / "media"
SIZE = (240, 320)  # frame height, width


def texture(seed: int = 0) -> np.ndarray:
    """A smooth random texture (blurred noise): corners everywhere, as on a face."""
    noise = np.random.default_rng(seed).integers(0, 256, (SIZE[0], SIZE[1]), dtype=np.uint8)
    grey = cv2.GaussianBlur(noise, (0, 0), 2.0)
    grey = cv2.normalize(grey, None, 0, 255, cv2.NORM_MINMAX)
    return np.repeat(grey[..., None], 3, axis=2)


def warp(image: np.ndarray, dx: float, dy: float, scale: float = 1.0, centre=(160.0, 120.0)) -> np.ndarray:
    """``image`` scaled about ``centre`` then shifted by (dx, dy): what a face doing that looks like."""
    cx, cy = centre
    matrix = np.array([[scale, 0, cx - scale * cx + dx], [0, scale, cy - scale * cy + dy]], np.float64)
    return cv2.warpAffine(image, matrix, (SIZE[1], SIZE[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def face(box=(120.0, 80.0, 200.0, 160.0), score=0.9) -> Detection:
    x0, y0, x1, y1 = box
    keypoints = np.array([[140, 110], [180, 110], [160, 130], [160, 145], [125, 115], [195, 115]], np.float32)
    return Detection(box=np.array(box, np.float32), score=score, keypoints=keypoints)


class CountingDetector:
    """Stands for BlazeFace: returns what it is given per call and counts the calls."""

    def __init__(self, faces):
        self.faces = faces
        self.calls = []

    def detect(self, frame):
        self.calls.append(len(self.calls))
        return list(self.faces)


@pytest.mark.parametrize("dx, dy, scale", [(3.0, -2.0, 1.0), (-4.5, 1.5, 1.0), (2.0, 1.0, 1.06), (0.0, 0.0, 0.95)])
def test_flow_moves_box_and_keypoints_with_the_image(dx, dy, scale):
    first = texture()
    second = warp(first, dx, dy, scale)
    flow = FaceFlow()
    track = flow.start(first, face())
    assert flow.step(track, second)
    cx, cy = 160.0, 120.0  # the centre of face()'s box is the warp's centre: it only shifts
    half = 40.0 * scale
    np.testing.assert_allclose(
        track.face.box, [cx + dx - half, cy + dy - half, cx + dx + half, cy + dy + half], atol=0.3
    )
    expected = (face().keypoints - (cx, cy)) * scale + (cx + dx, cy + dy)
    np.testing.assert_allclose(track.face.keypoints, expected, atol=0.3)
    assert track.face.score == 0.9  # a carried face keeps its keyframe's score


def test_flow_follows_a_drift_over_many_frames_without_accumulating_error():
    base = texture(1)
    flow = FaceFlow()
    track = flow.start(base, face())
    for step in range(1, 31):  # 1.5 px a frame to the right, 45 px in all: the patch is moved on the way
        assert flow.step(track, warp(base, 1.5 * step, 0.0))
    np.testing.assert_allclose(track.face.box, [165.0, 80.0, 245.0, 160.0], atol=1.0)


def test_flow_loses_the_face_on_an_unrelated_frame():
    flow = FaceFlow()
    track = flow.start(texture(2), face())
    before = track.face.box.copy()
    assert not flow.step(track, texture(3))
    np.testing.assert_array_equal(track.face.box, before)  # lost: the track is left as it was
    assert flow.start(texture(2), face(box=(10.0, 10.0, 12.0, 12.0))) is None  # too small to follow


def test_keyframes_then_flow_between_them():
    frames = [warp(texture(4), 1.0 * i, 0.5 * i) for i in range(20)]
    detector = CountingDetector([face()])
    faces = KeyframeDetector(detector, every=5)
    found = [faces.detect(frame) for frame in frames]
    assert detector.calls == [0, 1, 2, 3]  # frames 1, 6, 11, 16
    assert faces.stats == {"frames": 20, "detected": 4, "carried": 16, "lost": 0}
    assert all(len(f) == 1 for f in found)
    np.testing.assert_allclose(found[4][0].box, [124.0, 82.0, 204.0, 162.0], atol=0.5)  # carried 4 frames


def test_unsure_faces_and_no_faces_are_detected_again_not_carried():
    frames = [texture(5)] * 10
    unsure = CountingDetector([face(score=0.6)])  # under carry_min_score 0.7: detected every frame
    faces = KeyframeDetector(unsure, every=5)
    for frame in frames:
        faces.detect(frame)
    assert len(unsure.calls) == 10
    nobody = CountingDetector([])  # no face: look again every faceless_every (2) frames
    faces = KeyframeDetector(nobody, every=5)
    assert [len(faces.detect(frame)) for frame in frames] == [0] * 10
    assert len(nobody.calls) == 5


def test_a_lost_face_is_detected_on_that_frame():
    frames = [texture(6), texture(6), texture(7), texture(7)]
    detector = CountingDetector([face()])
    faces = KeyframeDetector(detector, every=10)
    for frame in frames:
        faces.detect(frame)
    assert faces.stats == {"frames": 4, "detected": 2, "carried": 2, "lost": 1}


def test_bad_interval():
    with pytest.raises(ValueError, match=r"^detect_every must be >= 1 \(1: detect on every frame\), got 0$"):
        KeyframeDetector(CountingDetector([]), every=0)


def test_real_media_keyframes_match_per_frame_detection():
    videos = [MEDIA / name for name in MEDIA_VIDEOS]
    missing = [str(v) for v in videos if not v.is_file()]
    if missing:
        pytest.fail(f"{missing[0]} is missing; run `make media`")
    got = quality(videos, every=10)
    assert got["keyframe_frames"] == 72 + 95 + 169 + 169 + 472  # every decoded frame of the five videos
    assert got["keyframe_hit_rate_gap"] <= 0.01  # the bound
    assert got["keyframe_iou_mean"] >= 0.90
    assert got["keyframe_detected_share"] < 0.35  # the detector ran on at most a third of the frames
    per_video = got["keyframe_videos"]
    # A face in every frame stays a face in every frame; carried boxes stay on it.
    for name in ("single_face.mp4", "WolfgangLanger_Pexels.mp4"):
        v = per_video[name]
        assert v["hits_keyframes"] == v["hits_every_frame"] == v["frames"]
        assert v["iou_mean"] >= 0.9
