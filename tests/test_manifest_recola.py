"""The RECOLA layout: gold-standard ARFF/CSV ratings at 40 ms steps joined to 25 fps frames."""

import re

import numpy as np
import pytest

from data_manifests.layouts.recola import read_ratings
from data_manifests.loader import load_dataset, samples
from data_manifests.schema import COLUMNS, DatasetError
from tests import manifest_trees as trees


def arff(name, rows, attributes=("Instance_name string", "frameTime numeric", "GoldStandard numeric")):
    head = "@relation GoldStandard\n\n" + "".join(f"@attribute {a}\n" for a in attributes)
    return head + "\n@data\n\n" + "".join(f"'{name}',{t},{v}\n" for t, v in rows)


def recola_tree(root):
    gold = root / "ratings_gold_standard"
    trees.write(gold / "arousal/P16.arff", arff("P16", [("0.000000", 0.1), ("0.040000", 0.2), ("0.080000", -0.3)]))
    trees.write(
        gold / "valence/P16.arff",
        arff("P16", [("0.000000", 0.5), ("0.040000", -0.5), ("0.080000", 0.0), ("0.120000", 0.25)]),
    )
    trees.write(gold / "arousal/P39.csv", "time;GoldStandard\n0.00;0.7\n0.04;0.6\n")
    trees.write(gold / "valence/P39.csv", "time;GoldStandard\n0.00;-0.7\n0.04;-0.6\n")
    trees.write(gold / "arousal/P99.csv", "frameTime,GoldStandard\n0.4,0.1\n")
    trees.write(gold / "valence/P99.csv", "frameTime,GoldStandard\n0.4,0.2\n")
    trees.video(root / "recordings_video/P16.mp4")
    trees.video(root / "recordings_video/more/P39.mp4")
    return root


def test_recola_table(tmp_path):
    root = recola_tree(tmp_path)
    table = load_dataset("recola", root)
    assert list(table.columns) == list(COLUMNS)
    assert table.sample_id.tolist() == ["P16", "P39", "P99"]
    # P16/P39 from the manifest's AVEC lists; P99 is in no list: default_split.
    assert table.split.tolist() == ["train", "validation", "test"]
    assert set(table.task) == {"va"} and table.attrs["input"] == "video"
    p16 = table.iloc[0]
    assert p16.frame_index.dtype == np.int32 and p16.frame_index.tolist() == [1, 2, 3, 4]
    # Columns are (valence, arousal); arousal has no rating at frame 4: invalid marker there.
    np.testing.assert_allclose(p16.labels, [[0.5, 0.1], [-0.5, 0.2], [0.0, -0.3], [0.25, -5]])
    assert p16.labels.dtype == np.float32 and p16.valid.tolist() == [True, True, True, False]
    np.testing.assert_allclose(table.labels.iloc[1], [[-0.7, 0.7], [-0.6, 0.6]])
    assert table.frame_index.iloc[2].tolist() == [11]  # 0.4 s at 25 fps is frame 11
    assert table.media_path.tolist() == [
        str(root / "recordings_video/P16.mp4"),
        str(root / "recordings_video/more/P39.mp4"),
        "",
    ]
    assert (table.subject == table.sample_id).all() and (table.frames_dir == "").all()
    assert samples(table).n_frames.tolist() == [4, 2, 11]


def test_recola_avec2016_instance_names_get_their_split(tmp_path):
    gold = tmp_path / "AVEC2016/ratings_gold_standard"
    for dim in ("arousal", "valence"):
        trees.write(gold / f"{dim}/dev_3.arff", arff("dev_3", [("0.0", 0.1)]))
        trees.write(gold / f"{dim}/train_1.arff", arff("train_1", [("0.0", 0.1)]))
    table = load_dataset("recola", tmp_path)
    assert table.sample_id.tolist() == ["dev_3", "train_1"]
    assert table.split.tolist() == ["validation", "train"]


@pytest.mark.parametrize(
    "text, message",
    [
        (
            arff("P16", [("0.0", 0.1), ("0.04", 1.5)]),
            ":10: expected a time >= 0 (seconds) and a GoldStandard in [-1, 1], got \"'P16',0.04,1.5\"",
        ),
        (arff("P16", [("0.0", 0.1), ("abc", 0.1)]), ":10: expected a time >= 0"),
        (
            arff("P16", [("0.04", 0.1), ("0.04", 0.1)]),
            ":10: expected increasing times one frame (1/25 s) or more apart, got frame 2 after 2",
        ),
        (
            arff("P16", [("0.0", 0.1)]).replace("'P16',0.0,0.1", "'P16',0.0"),
            ":9: expected 3 values (Instance_name, frameTime, GoldStandard), got \"'P16',0.0\"",
        ),
        (
            arff("P16", [("0.0", 0.1)], attributes=("frameTime numeric", "Rater1 numeric")),
            ":6: expected a time column (frameTime or time) and GoldStandard, got frameTime, Rater1",
        ),
        ("@relation x\n@attribute time numeric\n", ":3: expected an '@data' line"),
    ],
)
def test_recola_malformed_arff(tmp_path, text, message):
    path = trees.write(tmp_path / "P16.arff", text)
    with pytest.raises(DatasetError, match=re.escape(f"{path}{message}")):
        read_ratings(path, 25)


def test_recola_dimension_missing_and_no_ratings(tmp_path):
    root = recola_tree(tmp_path / "r")
    (root / "ratings_gold_standard/valence/P39.csv").unlink()
    with pytest.raises(
        DatasetError,
        match=re.escape(
            f"{root / 'ratings_gold_standard/arousal/P39.csv'}: no matching valence file; expected "
            f"{root / 'ratings_gold_standard/valence/P39.csv'} too"
        ),
    ):
        load_dataset("recola", root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DatasetError, match=re.escape(f"{tmp_path / 'empty'}: no ratings_gold_standard/ folder within 2 levels")
    ):
        load_dataset("recola", tmp_path / "empty")
