"""The Aff-Wild2 (ABAW 3-6) layout, read from a miniature tree in the official format."""

import re
import shutil

import numpy as np
import pytest

from data_manifests.layouts.affwild2 import parse_label_file
from data_manifests.loader import load_dataset, samples
from data_manifests.schema import COLUMNS, DatasetError
from tests import manifest_trees as trees


@pytest.fixture
def tree(tmp_path):
    return trees.affwild2(tmp_path / "affwild2")


def _row(table, sample_id, task):
    hit = table[(table.sample_id == sample_id) & (table.task == task)]
    assert len(hit) == 1, (sample_id, task)
    return hit.iloc[0]


def test_table_columns_rows_and_order(tree):
    table = load_dataset("affwild2", tree)
    assert list(table.columns) == list(COLUMNS)
    assert list(zip(table.sample_id, table.task, table.split)) == [
        ("vidA", "va", "train"),
        ("vidA", "au", "validation"),
        ("vidB_left", "va", "validation"),
        ("vidB_left", "expr", "train"),
        ("vidB_right", "expr", "train"),
    ]
    assert list(table.index) == [0, 1, 2, 3, 4]
    assert table.attrs == {"dataset": "affwild2", "layout": "affwild2", "input": "frames", "root": str(tree)}


def test_va_labels_join_by_frame_number_with_invalid_marker(tree):
    va = _row(load_dataset("affwild2", tree), "vidA", "va")
    assert va.frame_index.dtype == np.int32 and va.frame_index.tolist() == [1, 2, 3, 4]
    assert va.labels.dtype == np.float32 and va.labels.shape == (4, 2)
    np.testing.assert_array_equal(va.labels, [[0.5, -0.25], [-1, 1], [-5, -5], [0.125, 0]])
    assert va.valid.dtype == bool and va.valid.tolist() == [True, True, False, True]


def test_expr_and_au_labels_and_masks(tree):
    table = load_dataset("affwild2", tree)
    expr = _row(table, "vidB_left", "expr")
    assert expr.labels.dtype == np.int64 and expr.labels.tolist() == [0, -1, 7]
    assert expr.valid.tolist() == [True, False, True]
    assert _row(table, "vidB_right", "expr").labels.tolist() == [4, 4, 5, 6, 3]
    au = _row(table, "vidA", "au")
    assert au.labels.dtype == np.float32 and au.labels.shape == (2, 12)
    assert au.labels[0].tolist() == [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0]
    assert (au.labels[1] == -1).all() and au.valid.tolist() == [True, False]
    # A CRLF file reads the same as an LF one.
    np.testing.assert_allclose(_row(table, "vidB_left", "va").labels, [[0.1, 0.2], [-0.3, 0.4]])


def test_left_right_subjects_share_one_video_found_recursively(tree):
    table = load_dataset("affwild2", tree)
    left, right = _row(table, "vidB_left", "expr"), _row(table, "vidB_right", "expr")
    assert (left.video, left.side, left.subject) == ("vidB", "left", "vidB_left")
    assert (right.video, right.side, right.subject) == ("vidB", "right", "vidB_right")
    avi = str(tree / "videos/new_vids/more/vidB.avi")
    assert left.media_path == right.media_path == avi
    vid_a = _row(table, "vidA", "va")
    assert (vid_a.video, vid_a.side, vid_a.subject) == ("vidA", "", "vidA")
    assert vid_a.media_path == str(tree / "videos/batch1/vidA.mp4")
    assert vid_a.frames_dir == str(tree / "cropped_aligned/vidA")
    assert left.frames_dir == str(tree / "cropped_aligned/vidB_left")
    assert right.frames_dir == ""  # no cropped folder for this subject


def test_samples_one_row_each_with_last_labelled_frame(tree):
    todo = samples(load_dataset("affwild2", tree))
    assert list(todo.columns) == [
        "sample_id",
        "video",
        "subject",
        "side",
        "media_path",
        "frames_dir",
        "audio_path",
        "n_frames",
    ]
    assert todo.sample_id.tolist() == ["vidA", "vidB_left", "vidB_right"]
    # vidA: 4 VA frames, 2 AU frames; vidB_left: 2 VA, 3 EXPR frames.
    assert todo.n_frames.tolist() == [4, 3, 5]
    assert todo.side.tolist() == ["", "left", "right"]


def test_videos_at_root_and_classification_folder_name(tmp_path):
    # ABAW5 EXPR folder name, annotations directly at the root, video folders at the root; a video
    # inside cropped_aligned/ must not be picked up (that folder is never searched).
    root = trees.affwild2(tmp_path / "r", annotations="", expr_folder="EXPR_Classification_Challenge", videos="")
    trees.video(root / "cropped_aligned/vidB_right/vidB_right.mp4")
    shutil.move(root / "new_vids/more/vidB.avi", root / "cropped_aligned/vidB_left/vidB.avi")
    table = load_dataset("affwild2", root)
    assert _row(table, "vidA", "va").media_path == str(root / "batch1/vidA.mp4")
    assert _row(table, "vidB_left", "expr").media_path == ""
    assert _row(table, "vidB_right", "expr").labels.tolist() == [4, 4, 5, 6, 3]


def test_synthetic_uses_the_affwild2_layout_unchanged(tree):
    a, s = load_dataset("affwild2", tree), load_dataset("synthetic", tree)
    assert s.attrs["dataset"] == "synthetic" and s.attrs["layout"] == "affwild2"
    assert a[["sample_id", "task", "split", "media_path", "frames_dir"]].equals(
        s[["sample_id", "task", "split", "media_path", "frames_dir"]]
    )
    for x, y in zip(a.labels, s.labels):
        np.testing.assert_array_equal(x, y)


def _va_file(tree):
    return tree / "6th ABAW Annotations/VA_Estimation_Challenge/Train_Set/vidA.txt"


@pytest.mark.parametrize(
    "text, message",
    [
        ("valence;arousal\n0.1,0.2\n", ":1: expected header 'valence,arousal', got 'valence;arousal'"),
        ("", ":1: expected header 'valence,arousal', got ''"),
        ("valence,arousal\n", ":2: expected one label line per frame after the header, got none"),
        (
            "valence,arousal\n0.1,0.2\n0.1,0.2,0.3\n",
            ":3: expected valence,arousal floats in [-1, 1] (or -5 = unannotated) "
            "(2 comma-separated values, found 3), got '0.1,0.2,0.3'",
        ),
        (
            "valence,arousal\n0.1,0.2\n0.3,abc\n",
            ":3: expected valence,arousal floats in [-1, 1] (or -5 = unannotated) (numbers only, "
            "found 'abc'), got '0.3,abc'",
        ),
        (
            "valence,arousal\n0.1,0.2\n0.3,0.4\n1.5,0\n",
            ":4: expected valence,arousal floats in [-1, 1] (or -5 = unannotated), got '1.5,0'",
        ),
        # A blank line inside the file would shift every later frame: refused, not skipped.
        (
            "valence,arousal\n0.1,0.2\n\n0.3,0.4\n",
            ":3: expected valence,arousal floats in [-1, 1] (or -5 = unannotated) "
            "(2 comma-separated values, found 1), got ''",
        ),
    ],
)
def test_malformed_va_file_names_file_and_line(tree, text, message):
    path = _va_file(tree)
    path.write_text(text)
    with pytest.raises(DatasetError, match=re.escape(f"{path}{message}")):
        load_dataset("affwild2", tree)


@pytest.mark.parametrize(
    "task, text, message",
    [
        ("expr", f"{trees.EXPR_HEADER}\n0\n8\n", ":3: expected one integer class in 0..7 (or -1 = ignore), got '8'"),
        ("expr", f"{trees.EXPR_HEADER}\n2.5\n", ":2: expected one integer class in 0..7 (or -1 = ignore), got '2.5'"),
        ("expr", f"{trees.EXPR_HEADER}\n-5\n", ":2: expected one integer class in 0..7 (or -1 = ignore), got '-5'"),
        ("expr", "Neutral,Anger\n0\n", f":1: expected header '{trees.EXPR_HEADER}', got 'Neutral,Anger'"),
        (
            "au",
            f"{trees.AU_HEADER}\n1,0,0,0,0,0,1,0,0,0,1,0\n1,0,0,0,0,0,2,0,0,0,1,0\n",
            ":3: expected 12 AU values, each 0 or 1 (or -1 = ignore), got '1,0,0,0,0,0,2,0,0,0,1,0'",
        ),
        (
            "au",
            f"{trees.AU_HEADER}\n1,0,0\n",
            ":2: expected 12 AU values, each 0 or 1 (or -1 = ignore) (12 comma-separated values, found 3), got '1,0,0'",
        ),
        ("va", "valence,arousal\n-5,0.5\n-0.99,-1\n", None),
    ],
)
def test_label_values_checked_per_task(tmp_path, task, text, message):
    path = trees.write(tmp_path / "x.txt", text)
    if message is None:
        frame_index, labels, valid = parse_label_file(path, task)
        assert frame_index.tolist() == [1, 2] and valid.tolist() == [False, True]
        return
    with pytest.raises(DatasetError, match=re.escape(f"{path}{message}")):
        parse_label_file(path, task)


def test_both_expr_folder_names_is_an_error(tree):
    old = tree / "6th ABAW Annotations/EXPR_Classification_Challenge/Train_Set/vidB_left.txt"
    trees.write(old, f"{trees.EXPR_HEADER}\n1\n")
    with pytest.raises(
        DatasetError,
        match=r"expr annotations: found 2 folders .*"
        r"EXPR_Classification_Challenge.*EXPR_Recognition_Challenge"
        r".*expected one",
    ):
        load_dataset("affwild2", tree)


def test_sample_in_two_splits_of_one_task_is_an_error(tree):
    dup = tree / "6th ABAW Annotations/VA_Estimation_Challenge/Validation_Set/vidA.txt"
    trees.write(dup, "valence,arousal\n0,0\n")
    with pytest.raises(
        DatasetError,
        match=re.escape(f"{dup}: sample 'vidA' is also in {_va_file(tree)}; expected each sample in one split"),
    ):
        load_dataset("affwild2", tree)


def test_no_annotation_folder_is_an_error(tmp_path):
    trees.jpg(tmp_path / "cropped_aligned/v/00001.jpg")
    with pytest.raises(
        DatasetError,
        match=re.escape(
            f"{tmp_path}: no annotation folder found within 3 levels; expected "
            "VA_Estimation_Challenge, EXPR_Classification_Challenge, EXPR_Recognition_Challenge, "
            "AU_Detection_Challenge (each with Train_Set/, Validation_Set/)"
        ),
    ):
        load_dataset("affwild2", tmp_path)


def test_task_folder_without_split_folders_is_an_error(tree):
    folder = tree / "6th ABAW Annotations/AU_Detection_Challenge"
    shutil.rmtree(folder / "Validation_Set")
    (folder / "train").mkdir()
    with pytest.raises(
        DatasetError,
        match=re.escape(f"{folder}: expected sub-folders Train_Set/ and Validation_Set/ of <video>.txt files"),
    ):
        load_dataset("affwild2", tree)


def test_optional_subjects_table_names_the_people(tree):
    trees.write(tree / "subjects.csv", "sample_id,video,subject\nvidA,vidA,p1\nvidB_left,vidB,p1\n")
    table = load_dataset("affwild2", tree)
    # vidB_right is not listed: it stays its own subject.
    assert dict(zip(table.sample_id, table.subject)) == {"vidA": "p1", "vidB_left": "p1", "vidB_right": "vidB_right"}
    trees.write(tree / "subjects.csv", "sample_id,subject\nvidA,p1\nvidA,p2\n")
    with pytest.raises(
        DatasetError, match=re.escape(f"{tree / 'subjects.csv'}:3: expected each sample_id listed once, got 'vidA,p2'")
    ):
        load_dataset("affwild2", tree)
    trees.write(tree / "subjects.csv", "sample,subject\nvidA,p1\n")
    with pytest.raises(
        DatasetError,
        match=re.escape(f"{tree / 'subjects.csv'}:1: expected columns sample_id,subject, missing sample_id"),
    ):
        load_dataset("affwild2", tree)
