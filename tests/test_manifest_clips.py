"""The clip-level layouts: AFEW (EmotiW folders) and Hume-Reaction (ABAW5 ERI CSV)."""

import re

import numpy as np
import pytest

from data_manifests.loader import load_dataset, samples
from data_manifests.schema import COLUMNS, DatasetError
from tests import manifest_trees as trees


def afew_tree(root, nest=""):
    base = root / nest if nest else root
    trees.video(base / "Train_AFEW/Angry/000046280.avi")
    trees.video(base / "Train_AFEW/Happy/000112254.avi")
    trees.video(base / "Train_AFEW/Happy/000123000.mp4")
    trees.write(base / "Train_AFEW/Happy/notes.txt", "not a clip")
    trees.video(base / "Val_AFEW/sad/000225404.avi")  # folder case differs: still Sad
    trees.video(base / "Test_AFEW/000999001.avi")
    return root


def test_afew_one_label_per_clip_from_its_folder(tmp_path):
    root = afew_tree(tmp_path)
    table = load_dataset("afew", root)
    assert list(table.columns) == list(COLUMNS)
    assert table.sample_id.tolist() == ["000046280", "000112254", "000123000", "000225404", "000999001"]
    assert table.split.tolist() == ["train", "train", "train", "validation", "test"]
    assert table.labels.tolist() == [0, 3, 3, 5, -1]  # Angry, Happy, Happy, Sad, unlabelled
    assert table.valid.tolist() == [True, True, True, True, False]
    assert set(table.task) == {"clip"} and table.frame_index.isna().all()
    assert table.media_path.iloc[0] == str(root / "Train_AFEW/Angry/000046280.avi")
    assert table.media_path.iloc[2] == str(root / "Train_AFEW/Happy/000123000.mp4")
    assert (table.frames_dir == "").all() and (table.subject == table.sample_id).all()
    assert table.attrs["input"] == "video"
    todo = samples(table)
    assert todo.n_frames.tolist() == [0] * 5 and todo.video.tolist() == table.video.tolist()


def test_afew_split_folders_one_level_down(tmp_path):
    table = load_dataset("afew", afew_tree(tmp_path, nest="EmotiW_2019"))
    assert len(table) == 5
    assert table.media_path.iloc[3] == str(tmp_path / "EmotiW_2019/Val_AFEW/sad/000225404.avi")


def test_afew_unknown_emotion_folder(tmp_path):
    root = afew_tree(tmp_path)
    trees.video(root / "Val_AFEW/Contempt/000000001.avi")
    with pytest.raises(
        DatasetError,
        match=re.escape(
            f"{root / 'Val_AFEW/Contempt'}: unknown emotion folder 'Contempt'; expected one of "
            "Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise "
            "(move other folders out of Val_AFEW/)"
        ),
    ):
        load_dataset("afew", root)


def test_afew_clip_outside_emotion_folder_and_missing_splits(tmp_path):
    root = afew_tree(tmp_path / "a")
    trees.video(root / "Train_AFEW/000000002.avi")
    with pytest.raises(
        DatasetError,
        match=re.escape(
            f"{root / 'Train_AFEW/000000002.avi'}: clip outside an emotion folder; expected "
            "Train_AFEW/<Emotion>/000000002.avi"
        ),
    ):
        load_dataset("afew", root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DatasetError, match=re.escape(f"{tmp_path / 'empty'}: no Train_AFEW or Val_AFEW folder within 2 levels")
    ):
        load_dataset("afew", tmp_path / "empty")


INFO = f"File_ID,Split,{trees.ERI_HEADER}\n"


def hume_tree(root, rows):
    trees.write(root / "data_info.csv", INFO + "".join(r + "\n" for r in rows))
    trees.video(root / "videos/part1/00001.mp4")
    trees.video(root / "videos/part2/00003.mp4")
    return root


GOOD = ["[00001],Train,0.1,0.2,0.3,0.4,0.5,0.6,0.7", "[00002],Val,0,1,0.25,0,0,0,0.125", "[00003],Test,,,,,,,"]


def test_hume_reaction_table(tmp_path):
    root = hume_tree(tmp_path, GOOD)
    table = load_dataset("hume_reaction", root)
    assert list(table.columns) == list(COLUMNS)
    assert table.sample_id.tolist() == ["00001", "00002", "00003"]
    assert table.split.tolist() == ["train", "validation", "test"]
    assert set(table.task) == {"eri"} and table.frame_index.isna().all()
    assert table.labels.iloc[0].dtype == np.float32
    np.testing.assert_allclose(table.labels.iloc[0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], rtol=1e-6)
    np.testing.assert_array_equal(table.labels.iloc[1], [0, 1, 0.25, 0, 0, 0, 0.125])
    np.testing.assert_array_equal(table.labels.iloc[2], np.zeros(7))
    assert table.valid.tolist() == [True, True, False]
    assert table.media_path.tolist() == [str(root / "videos/part1/00001.mp4"), "", str(root / "videos/part2/00003.mp4")]
    assert table.attrs["input"] == "video"


def test_hume_reaction_per_split_files(tmp_path):
    header = f"File_ID,{trees.ERI_HEADER}\n"
    trees.write(tmp_path / "labels/train.csv", header + "[00007],0,0,0,0,0,0,1\n")
    trees.write(tmp_path / "labels/val.csv", header + "[00008],1,0,0,0,0,0,0\n")
    table = load_dataset("hume_reaction", tmp_path)
    assert table.sample_id.tolist() == ["00007", "00008"]
    assert table.split.tolist() == ["train", "validation"]
    assert table.labels.iloc[1].tolist() == [1, 0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            "[00004],Train,0.1,0.2,1.5,0.4,0.5,0.6,0.7",
            ":5: expected 7 intensities Adoration,Amusement,Anxiety,Disgust,Empathic-Pain,Fear,Surprise "
            "in [0, 1] (or all 7 empty), got '[00004],Train,0.1,0.2,1.5,0.4,0.5,0.6,0.7'",
        ),
        ("[00004],Train,0.1,,0.3,0.4,0.5,0.6,0.7", ":5: expected 7 intensities"),
        ("[00004],Train,0.1,x,0.3,0.4,0.5,0.6,0.7", ":5: expected 7 intensities"),
        ("[00004],Dev,0.1,0.2,0.3,0.4,0.5,0.6,0.7", ":5: expected Split one of Train, Val, Test, got 'Dev'"),
        ("[00001],Val,0.1,0.2,0.3,0.4,0.5,0.6,0.7", ": File_ID [00001] is also listed in"),
    ],
)
def test_hume_reaction_bad_lines(tmp_path, bad, message):
    root = hume_tree(tmp_path, [*GOOD, bad])
    with pytest.raises(DatasetError, match=re.escape(f"{root / 'data_info.csv'}{message}")):
        load_dataset("hume_reaction", root)


def test_hume_reaction_missing_column_and_missing_file(tmp_path):
    trees.write(tmp_path / "a/data_info.csv", "File_ID,Split,Adoration\n[1],Train,0.5\n")
    with pytest.raises(
        DatasetError,
        match=re.escape(
            f"{tmp_path / 'a/data_info.csv'}:1: expected columns File_ID,Split,Adoration,Amusement,"
            "Anxiety,Disgust,Empathic-Pain,Fear,Surprise, missing Amusement,Anxiety,Disgust,"
            "Empathic-Pain,Fear,Surprise"
        ),
    ):
        load_dataset("hume_reaction", tmp_path / "a")
    (tmp_path / "b").mkdir()
    with pytest.raises(
        DatasetError,
        match=re.escape(f"{tmp_path / 'b'}: no data_info.csv (or train.csv, val.csv, test.csv) within 2 levels"),
    ):
        load_dataset("hume_reaction", tmp_path / "b")
