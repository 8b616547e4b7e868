"""Faces: BlazeFace hit rates on real media, subject tracks and sides, crops and eye alignment."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from extract.faces import (
    DEFAULT_DETECTOR,
    DETECTOR_MODELS,
    Detection,
    FaceDetector,
    SubjectTracker,
    crop_face,
)
from extract.sources import iter_video

MEDIA = Path(__file__).parent / "media"


def media(name: str) -> Path:
    path = MEDIA / name
    if not path.is_file():
        pytest.fail(f"{path} is missing; run `make media`")
    return path


def read_rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(media(name))), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def detectors():
    made = {name: FaceDetector(name) for name in DETECTOR_MODELS}
    yield made
    for detector in made.values():
        detector.close()


def hits(detector: FaceDetector, name: str, step: int = 1) -> np.ndarray:
    """Whether each ``step``-th frame of a video has a face."""
    frames = (rgb for i, rgb in iter_video(media(name)) if (i - 1) % step == 0)
    return np.array([len(detector.detect(rgb)) > 0 for rgb in frames])


def face(x0, y0, x1, y1, score=0.9) -> Detection:
    box = np.array([x0, y0, x1, y1], dtype=np.float32)
    return Detection(box=box, score=score, keypoints=np.zeros((6, 2), dtype=np.float32))


def test_unknown_model_and_bad_score():
    with pytest.raises(ValueError, match=r"unknown face detector model 'tiny'; valid: short, full, full\+short$"):
        FaceDetector("tiny")
    with pytest.raises(ValueError, match=r"min_score must be in \[0, 1\], got 1.5"):
        FaceDetector(min_score=1.5)


def test_default_model_finds_the_face_on_nearly_every_frame(detectors):
    detector = detectors[DEFAULT_DETECTOR]
    assert DEFAULT_DETECTOR in detector.description and "mediapipe 0.10.21's models on LiteRT" in detector.description
    rates = []
    for _, rgb in iter_video(media("single_face.mp4")):
        faces = detector.detect(rgb)
        rates.append(len(faces) == 1)
        for found in faces:
            assert found.box.dtype == np.float32 and found.box.shape == (4,)
            assert found.keypoints.dtype == np.float32 and found.keypoints.shape == (6, 2)
            assert 0.5 <= found.score <= 1.0
            x0, y0, x1, y1 = found.box
            assert 0 < x1 - x0 < 640 and 0 < y1 - y0 < 360
            # Keypoints lie in the box, the subject's right eye on the image's left.
            assert np.all((found.keypoints[:4] >= found.box[:2]) & (found.keypoints[:4] <= found.box[2:]))
            assert found.keypoints[0, 0] < found.keypoints[1, 0]
    assert np.mean(rates) >= 0.95


@pytest.mark.parametrize("model", list(DETECTOR_MODELS))
def test_every_model_on_face_and_no_face_videos(detectors, model):
    assert hits(detectors[model], "single_face.mp4").mean() >= 0.95
    # The cloud-and-title frames of no_face.mp4 fool each model on 4 of 95 frames, not the same
    # ones, so the fallback model adds its own on top.
    assert hits(detectors[model], "no_face.mp4").mean() <= (0.07 if model == "full+short" else 0.05)


@pytest.mark.parametrize("name, face_first", [("face_noface.mov", True), ("noface_face.mov", False)])
def test_face_then_none_and_the_reverse(detectors, name, face_first):
    found = hits(detectors[DEFAULT_DETECTOR], name, step=2)  # frames 1, 3, ..., 169
    assert len(found) == 85
    with_face, without = (found[:42], found[43:]) if face_first else (found[43:], found[:42])
    assert with_face.mean() >= 0.8
    assert without.mean() <= 0.1


def test_multi_face_image_tracker_takes_the_largest(detectors):
    rgb = read_rgb("multi_face.jpg")
    faces = detectors[DEFAULT_DETECTOR].detect(rgb)
    assert len(faces) >= 4
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    areas = [float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) for f in faces]
    assert SubjectTracker().update(faces, rgb.shape[1]) is faces[int(np.argmax(areas))]


def two_faces(big_on_left: bool) -> np.ndarray:
    big = read_rgb("single_face.jpg")
    small = np.zeros_like(big)
    half = cv2.resize(big, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    small[: half.shape[0], : half.shape[1]] = half
    return np.hstack([big, small] if big_on_left else [small, big])


@pytest.mark.parametrize("big_on_left", [True, False])
def test_side_picks_the_face_on_that_side_whatever_its_size(detectors, big_on_left):
    frame = two_faces(big_on_left)
    width = frame.shape[1]
    faces = detectors[DEFAULT_DETECTOR].detect(frame)
    assert len(faces) == 2
    left = SubjectTracker("left").update(faces, width)
    right = SubjectTracker("right").update(faces, width)
    largest = SubjectTracker().update(faces, width)
    assert left.centre_x < width / 2 <= right.centre_x
    assert (largest is left) == big_on_left and (largest is right) != big_on_left
    # Only the right person visible: the left subject gets no face, not the other person's.
    frame[:, : width // 2] = 0
    lone = detectors[DEFAULT_DETECTOR].detect(frame)
    assert len(lone) == 1
    assert SubjectTracker("left").update(lone, width) is None
    assert SubjectTracker("right").update(lone, width) is lone[0]


def test_track_continues_past_a_larger_face_and_survives_short_gaps():
    tracker = SubjectTracker(max_missed=2)
    first = face(10, 10, 50, 50)
    assert tracker.update([first], 200) is first
    moved, bigger = face(14, 12, 54, 52), face(100, 10, 190, 100)
    assert tracker.update([bigger, moved], 200) is moved
    assert tracker.update([], 200) is None
    assert tracker.update([], 200) is None
    back = face(16, 12, 56, 52)
    assert tracker.update([bigger, back], 200) is back
    for _ in range(3):  # max_missed + 1 frames without it: the track is forgotten
        assert tracker.update([], 200) is None
    assert tracker.update([bigger, back], 200) is bigger


def test_track_lost_falls_back_to_the_largest_and_side_rule():
    tracker = SubjectTracker()
    assert tracker.update([face(10, 10, 50, 50)], 200) is not None
    far_small, far_big = face(150, 150, 170, 170), face(100, 100, 160, 160)
    assert tracker.update([far_small, far_big], 200) is far_big

    left = SubjectTracker("left")
    start = face(75, 10, 110, 45)
    assert left.update([start], 200) is start
    # The subject walks across the midline: the track keeps it although its centre is now right.
    crossed = face(85, 10, 120, 45)
    assert crossed.centre_x > 100
    assert left.update([crossed], 200) is crossed
    assert left.update([face(150, 10, 190, 50)], 200) is None


def test_bad_side():
    with pytest.raises(ValueError, match="unknown side 'middle'; valid: '', 'left', 'right'"):
        SubjectTracker("middle")


def gradient_frame(height=60, width=80) -> np.ndarray:
    y, x = np.mgrid[:height, :width]
    return np.stack([x * 3, y * 4, (x + y) % 256], axis=-1).astype(np.uint8)


def test_crop_is_the_box_at_scale_one_and_zero_padded_outside():
    frame = gradient_frame()
    crop = crop_face(frame, face(20, 10, 52, 42), (32, 32), margin=0.0)
    np.testing.assert_array_equal(crop, frame[10:42, 20:52])
    corner = crop_face(frame, face(-10, -6, 30, 34), (40, 40), margin=0.0)
    np.testing.assert_array_equal(corner[6:, 10:], frame[:34, :30])
    assert not corner[:6].any() and not corner[:, :10].any()
    # margin widens the square about the box centre: 32 * 1.5 = 48 pixels.
    wide = crop_face(frame, face(20, 10, 52, 42), (48, 48), margin=0.5)
    np.testing.assert_array_equal(wide, frame[2:50, 12:60])


@pytest.mark.parametrize("size", [(64, 64), (112, 96), (1, 1)])
def test_crop_shapes(size):
    crop = crop_face(gradient_frame(), face(5, 5, 45, 45), size, align=True)
    assert crop.shape == (*size, 3) and crop.dtype == np.uint8


def test_crop_rejects_bad_size():
    with pytest.raises(ValueError, match=r"crop size must be positive \(height, width\), got \(0, 64\)"):
        crop_face(gradient_frame(), face(5, 5, 45, 45), (0, 64))


def test_strong_downscale_equals_an_area_resize_of_the_full_size_crop():
    frame = read_rgb("single_face.jpg")
    found = face(170, 185, 370, 385)  # with margin 0.25: the square x 145..395, y 160..410
    full = crop_face(frame, found, (250, 250))
    np.testing.assert_array_equal(full, frame[160:410, 145:395])
    small = crop_face(frame, found, (50, 50))
    reference = cv2.resize(full, (50, 50), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - reference).max() <= 1


def test_align_levels_synthetic_eyes():
    frame = np.zeros((200, 200, 3), dtype=np.uint8)
    right_eye, left_eye = (80.0, 90.0), (120.0, 113.0)  # a 30 degree eye line
    for x, y in (right_eye, left_eye):
        cv2.circle(frame, (int(x), int(y)), 4, (255, 255, 255), -1)
    keypoints = np.zeros((6, 2), dtype=np.float32)
    keypoints[0], keypoints[1] = right_eye, left_eye
    found = Detection(np.array([60, 60, 140, 140], np.float32), 0.9, keypoints)
    crop = crop_face(frame, found, (100, 100), margin=0.0, align=True)
    ys, xs = np.nonzero(crop[..., 0] > 128)
    blob_left, blob_right = ys[xs < 50].mean(), ys[xs >= 50].mean()
    assert abs(blob_left - blob_right) < 1.0
    # The eye distance is kept: 46.2 px at crop scale 100/80.
    assert abs((xs[xs >= 50].mean() - xs[xs < 50].mean()) - np.hypot(40, 23) * 100 / 80) < 1.5


def test_align_levels_the_eyes_of_a_rotated_real_face(detectors):
    detector = detectors[DEFAULT_DETECTOR]
    image = read_rgb("single_face.jpg")
    height, width = image.shape[:2]
    tilted = cv2.warpAffine(image, cv2.getRotationMatrix2D((width / 2, height / 2), 25, 1.0), (width, height))
    (found,) = detector.detect(tilted)

    def eye_slope(crop):
        (eyes,) = detector.detect(crop)
        (rx, ry), (lx, ly) = eyes.keypoints[:2]
        return abs(ly - ry) / abs(lx - rx)

    plain = eye_slope(crop_face(tilted, found, (192, 192)))
    aligned = eye_slope(crop_face(tilted, found, (192, 192), align=True))
    assert plain > 0.15
    assert aligned < 0.05 and aligned < plain / 3


def test_detector_accepts_any_size_and_rejects_non_rgb(detectors):
    detector = detectors[DEFAULT_DETECTOR]
    assert detector.detect(np.zeros((17, 1031, 3), dtype=np.uint8)) == []
    assert detector.detect(np.zeros((1, 1, 3), dtype=np.uint8)) == []
    with pytest.raises(ValueError, match=r"expected an RGB uint8 frame \[H, W, 3\], got float32 \(8, 8, 3\)"):
        detector.detect(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"got uint8 \(8, 8\)"):
        detector.detect(np.zeros((8, 8), dtype=np.uint8))


def test_closed_detector():
    with FaceDetector("short") as detector:
        pass
    with pytest.raises(RuntimeError, match="FaceDetector is closed"):
        detector.detect(np.zeros((8, 8, 3), dtype=np.uint8))
