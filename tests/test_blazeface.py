"""BlazeFace on LiteRT (extract.blazeface) against mediapipe's own graphs, on the real test media."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from extract import blazeface
from extract.blazeface import SPECS, BlazeFaceModel, ModelFileError, ssd_anchors, weighted_nms
from extract.sources import iter_video

MEDIA = Path(__file__).parent / "media"
VIDEOS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "no_face.mp4", "face_noface.mov", "noface_face.mov")
IMAGES = ("multi_face.jpg", "single_face.jpg")


def media_frames(step: int) -> list[np.ndarray]:
    frames = []
    for name in VIDEOS:
        if not (MEDIA / name).is_file():
            pytest.fail(f"{MEDIA / name} is missing; run `make media`")
        frames += [rgb for i, rgb in iter_video(MEDIA / name) if (i - 1) % step == 0]
    return frames + [cv2.cvtColor(cv2.imread(str(MEDIA / name)), cv2.COLOR_BGR2RGB) for name in IMAGES]


def mediapipe_faces(graph, rgb: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """The faces of mediapipe's graph in pixels, read as extract.faces read them before LiteRT."""
    height, width = rgb.shape[:2]
    faces = []
    for item in graph.process(rgb).detections or []:
        rel = item.location_data.relative_bounding_box
        x0, y0 = rel.xmin * width, rel.ymin * height
        box = np.array([x0, y0, x0 + rel.width * width, y0 + rel.height * height], np.float32)
        points = np.array([(p.x, p.y) for p in item.location_data.relative_keypoints], np.float32)
        faces.append((box, float(item.score[0]), points * np.array([width, height], np.float32)))
    return sorted(faces, key=lambda face: -face[1])


def test_anchors_are_mediapipes_grids():
    full, short = ssd_anchors(SPECS["full"]), ssd_anchors(SPECS["short"])
    assert full.shape == (2304, 2) and short.shape == (896, 2)  # the graphs' num_boxes
    assert np.allclose(full[:2], [[0.5 / 48, 0.5 / 48], [1.5 / 48, 0.5 / 48]])
    # Short range: 2 anchors a cell on the 16x16 grid, then 6 a cell on the 8x8 grid of 3 layers.
    assert np.allclose(short[:3], [[0.5 / 16, 0.5 / 16]] * 2 + [[1.5 / 16, 0.5 / 16]])
    assert np.allclose(short[512:519], [[0.5 / 8, 0.5 / 8]] * 6 + [[1.5 / 8, 0.5 / 8]])


@pytest.mark.parametrize("model,selection", [("full", 1), ("short", 0)])
def test_same_faces_as_mediapipes_graph_on_real_media(model, selection):
    mp = pytest.importorskip("mediapipe")
    ours = BlazeFaceModel(model)
    found = 0
    with mp.solutions.face_detection.FaceDetection(model_selection=selection) as graph:
        for rgb in media_frames(step=3):
            theirs, mine = mediapipe_faces(graph, rgb), ours.detect(rgb)
            assert len(mine) == len(theirs)
            for (box, score, points), (ref_box, ref_score, ref_points) in zip(mine, theirs):
                assert box.dtype == np.float32 and points.shape == (6, 2)
                assert np.abs(box - ref_box).max() < 2e-3 and np.abs(points - ref_points).max() < 2e-3
                assert abs(score - ref_score) < 1e-6
            found += len(mine)
    assert found > 200  # most frames of the media have a face: the comparison is not of empty lists


def test_min_score_above_the_floor_drops_faces_and_below_it_changes_nothing():
    rgb = next(frame for i, frame in iter_video(MEDIA / "WolfgangLanger_Pexels.mp4") if i == 1)
    (best,) = BlazeFaceModel("full").detect(rgb)
    assert BlazeFaceModel("full", min_score=0.2).min_score == np.float32(0.6)  # the graph's own floor
    assert BlazeFaceModel("full", min_score=min(best[1] + 0.01, 1.0)).detect(rgb) == []


def test_weighted_nms_averages_overlapping_boxes_by_score():
    boxes = np.array([[0.1, 0.1, 0.2, 0.2], [0.12, 0.1, 0.2, 0.2], [0.6, 0.6, 0.1, 0.1]], np.float32)
    scores = np.array([0.9, 0.6, 0.7], np.float32)  # boxes 0 and 1 overlap; weighted_nms takes them best first
    keypoints = np.zeros((3, 6, 2), np.float32)
    keypoints[1] += 1.0
    order = np.argsort(-scores, kind="stable")
    faces = weighted_nms(boxes[order], scores[order], keypoints[order])
    assert [round(float(score), 2) for _, score, _ in faces] == [0.9, 0.7]
    merged, _, points = faces[0]
    assert np.allclose(merged, [(0.1 * 0.9 + 0.12 * 0.6) / 1.5, 0.1, 0.2, 0.2])
    assert np.allclose(points, 0.6 / 1.5)
    assert np.allclose(faces[1][0], boxes[2])
    # A box of no area overlaps nothing, not even itself: kept once, and the loop ends.
    flat = weighted_nms(np.zeros((2, 4), np.float32), np.array([0.8, 0.7], np.float32), np.zeros((2, 6, 2), np.float32))
    assert len(flat) == 1


def test_missing_models_name_the_package(monkeypatch):
    monkeypatch.setattr(blazeface.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelFileError, match=r"face_detection_full_range_sparse.tflite not found: .*make setup"):
        BlazeFaceModel("full")
