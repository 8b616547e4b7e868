"""Keyframe detection: the detector runs where it should, faces between agreeing keyframes are
interpolated exactly, the look-ahead is bounded, and on the real test media the cache gets the
faces and boxes of per-frame detection."""

from pathlib import Path

import numpy as np
import pytest

from bench.keyframes import MEDIA_VIDEOS, quality
from extract.faces import Detection
from extract.keyframes import KeyframeDetector, agreeing

MEDIA = Path(__file__).parent / "media"


def face(x: float, y: float = 40.0, side: float = 60.0, score: float = 0.9) -> Detection:
    keypoints = np.array([[x + 15, y + 20], [x + 45, y + 20], [x + 30, y + 35]] * 2, np.float32)
    return Detection(box=np.array([x, y, x + side, y + side], np.float32), score=score, keypoints=keypoints)


class ScriptedDetector:
    """Stands for BlazeFace: frame ``i`` (a tiny image holding ``i``) has the faces ``script(i)``."""

    def __init__(self, script):
        self.script = script
        self.calls: list[int] = []

    def detect(self, frame):
        index = int(frame[0, 0, 0]) + 256 * int(frame[0, 0, 1])
        self.calls.append(index)
        return list(self.script(index))


def frames(n: int):
    for i in range(n):
        yield i, np.array([[[i % 256, i // 256, 0]]], np.uint8)


def run(script, n: int, every: int):
    detector = ScriptedDetector(script)
    faces = KeyframeDetector(detector, every)
    out = list(faces.stream(frames(n)))
    assert [key for key, _, _ in out] == list(range(n))  # every frame, in order
    return [found for _, _, found in out], detector.calls, faces.stats


def test_faces_between_agreeing_keyframes_are_interpolated():
    found, calls, stats = run(lambda i: [face(100 + 2.0 * i, score=0.6 + 0.01 * i)], 23, every=5)
    assert calls == [0, 5, 10, 15, 20, 22]  # the last frame closes the last stretch
    assert stats == {"frames": 23, "detected": 6, "interpolated": 17}
    for i, faces in enumerate(found):  # linear motion: interpolation gives the detector's own answer
        (got,) = faces
        np.testing.assert_allclose(got.box, face(100 + 2.0 * i).box, atol=1e-4)
        np.testing.assert_allclose(got.keypoints, face(100 + 2.0 * i).keypoints, atol=1e-4)
        assert got.score == pytest.approx(0.6 + 0.01 * i)
        assert got.box.dtype == np.float32 and got.keypoints.dtype == np.float32


def test_a_jump_between_keyframes_is_bisected_down_to_the_frame():
    script = lambda i: [face(40.0 if i < 7 else 300.0)]  # noqa: E731  (the face jumps at frame 7)
    found, calls, _ = run(script, 11, every=10)
    assert [float(faces[0].box[0]) for faces in found] == pytest.approx([40.0] * 7 + [300.0] * 4)  # as per-frame
    assert calls == [0, 10, 5, 7, 6]  # ends, then halves until the jump is pinned


def test_a_face_coming_into_view_is_found_on_its_frame():
    found, calls, _ = run(lambda i: [face(100)] if i >= 13 else [], 31, every=10)
    assert [len(faces) for faces in found] == [0] * 13 + [1] * 18
    assert len(calls) == 11  # the keyframes 0, 10, 20, 30; every 2nd frame of the faceless stretch; bisection


def test_no_face_looks_every_second_frame():
    found, calls, stats = run(lambda i: [], 10, every=5)
    assert all(faces == [] for faces in found)
    assert sorted(calls) == [0, 2, 4, 5, 7, 9]
    assert stats["interpolated"] == 0


def test_two_faces_pair_by_overlap_not_by_order():
    # The two faces swap score order between the keyframes: pairing by list position would cross them.
    def script(i):
        return sorted([face(40 + i, score=0.9 - 0.02 * i), face(300 - i, score=0.7 + 0.02 * i)], key=lambda f: -f.score)

    found, calls, _ = run(script, 11, every=10)
    assert calls == [0, 10]
    for i, faces in enumerate(found):
        assert sorted(float(f.box[0]) for f in faces) == pytest.approx([40 + i, 300 - i], abs=1e-4)
        assert faces[0].score >= faces[1].score


def test_a_second_face_or_a_lost_one_is_a_disagreement():
    assert agreeing([face(10)], [face(10), face(200)], 0.7) is None
    assert agreeing([face(10)], [], 0.7) is None
    assert agreeing([face(10)], [face(40)], 0.7) is None  # IoU 0.33: moved too far to interpolate
    assert agreeing([face(10)], [face(14)], 0.7) is not None


def test_every_one_detects_every_frame():
    found, calls, stats = run(lambda i: [face(i)], 6, every=1)
    assert calls == list(range(6))
    assert stats == {"frames": 6, "detected": 6, "interpolated": 0}


def test_the_look_ahead_is_bounded():
    pulled = []

    def counted():
        for key, rgb in frames(100):
            pulled.append(key)
            yield key, rgb

    faces = KeyframeDetector(ScriptedDetector(lambda i: [face(50)]), every=10)
    for key, _, _ in faces.stream(counted()):
        assert len(pulled) - key <= 11  # at most every + 1 frames held, whatever the length


def test_bad_settings():
    detector = ScriptedDetector(lambda i: [])
    with pytest.raises(ValueError, match=r"^detect_every must be >= 1 \(1: detect on every frame\), got 0$"):
        KeyframeDetector(detector, every=0)
    with pytest.raises(ValueError, match=r"^min_iou must be in \(0, 1\], got 0.0$"):
        KeyframeDetector(detector, every=5, min_iou=0.0)


@pytest.mark.slow  # runs BlazeFace on every frame of the test media: seconds
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
    # A face in every frame stays a face in every frame; interpolated boxes stay on it.
    for name in ("single_face.mp4", "WolfgangLanger_Pexels.mp4"):
        v = per_video[name]
        assert v["hits_keyframes"] == v["hits_every_frame"] == v["frames"]
        assert v["iou_mean"] >= 0.9
