"""The registry, manifest parsing, load_dataset's errors and the summary command line."""

import dataclasses
import re

import pytest

from data_manifests.__main__ import main
from data_manifests.loader import DATASETS, load_dataset, load_manifest, read_manifest
from data_manifests.schema import LABELS, SPLITS, DatasetError
from tests import manifest_trees as trees

NAMES = "afew, affwild2, hume_reaction, recola, synthetic"


def test_registry_is_one_toml_per_dataset():
    assert DATASETS == ("afew", "affwild2", "hume_reaction", "recola", "synthetic")
    for name in DATASETS:
        m = load_manifest(name)
        assert m.name == name and m.source.name == f"{name}.toml"
        assert m.input in ("frames", "video") and set(m.tasks) <= set(LABELS)
    assert [load_manifest(n).input for n in DATASETS] == ["video", "frames", "video", "video", "frames"]
    assert load_manifest("affwild2").tasks == ("va", "expr", "au")
    synthetic, affwild2 = load_manifest("synthetic"), load_manifest("affwild2")
    assert synthetic.layout == "affwild2"
    assert dict(synthetic.paths) == dict(affwild2.paths) and synthetic.options == affwild2.options
    recola = load_manifest("recola").options["splits"]
    assert recola["train"] == ("P16", "P19", "P21", "P23", "P25", "P26", "P28", "P30", "P34")
    assert recola["validation"] == ("P39", "P41", "P42", "P43", "P45", "P46", "P56", "P64", "P65")


def test_manifest_is_immutable():
    m = load_manifest("affwild2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.input = "video"
    with pytest.raises(TypeError):
        m.options["task_folders"]["va"] = ("x",)


def test_unknown_dataset_lists_valid_names(tmp_path):
    message = f"unknown dataset 'affwild3'; valid names: {NAMES}"
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_dataset("affwild3", tmp_path)
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_manifest("affwild3")


def test_missing_root_names_it_and_the_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(
        DatasetError,
        match=re.escape(
            f"{missing}: dataset root not found; expected the synthetic tree described in "
            "docs/datasets.md (set DATA_ROOT); generate it with `make data DATASET=synthetic`"
        ),
    ):
        load_dataset("synthetic", missing)
    a_file = trees.write(tmp_path / "file", "x")
    with pytest.raises(DatasetError, match=re.escape(f"{a_file}: dataset root is a file, not a folder")):
        load_dataset("affwild2", a_file)


GOOD = 'name = "x"\nlayout = "afew"\ninput = "video"\ndescription = "d"\ntasks = ["clip"]\n[paths]\n'


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace('input = "video"', 'input = "frame"'), ":3: expected input one of frames, video, got 'frame'"),
        (
            GOOD.replace('layout = "afew"', 'layout = "emotiw"'),
            ":2: expected layout one of affwild2, afew, hume_reaction, recola, got 'emotiw'",
        ),
        (
            GOOD.replace('tasks = ["clip"]', 'tasks = ["valence"]'),
            ":5: expected tasks a non-empty list of va, expr, au, eri, clip, got ['valence']",
        ),
        (GOOD.replace('name = "x"', 'name = "y"'), ":1: expected name = 'x' (the file name), got 'y'"),
        (GOOD + "[option]\n", ":7: expected one of the keys name, layout, input"),
        (GOOD.replace('tasks = ["clip"]', 'tasks = "clip"'), ":5: expected tasks to be a list, got str"),
        (GOOD.replace('description = "d"\n', ""), ": expected a 'description' key"),
        (GOOD.replace('input = "video"', "input = video"), ": invalid TOML: Invalid value (at line 3"),
        ('base = "nope"\n' + GOOD, ":1: expected the name of another manifest"),
    ],
)
def test_malformed_manifest_names_file_and_line(tmp_path, text, message):
    path = trees.write(tmp_path / "x.toml", text)
    with pytest.raises(DatasetError, match=re.escape(f"{path}{message}")):
        read_manifest(path)


def test_layout_option_missing_is_named(tmp_path):
    path = trees.write(tmp_path / "x.toml", GOOD)
    manifest = read_manifest(path)
    with pytest.raises(
        DatasetError, match=re.escape(f"{path}: [options] lacks 'split_folders', which the afew layout needs")
    ):
        manifest.option("split_folders")
    assert manifest.option("test_folder", "") == ""


def test_every_manifest_split_is_a_schema_split():
    for name in DATASETS:
        options = load_manifest(name).options
        values = [
            *options.get("split_folders", {}).values(),
            *options.get("split_values", {}).values(),
            *options.get("split_files", {}).values(),
            *options.get("splits", {}),
            *options.get("split_prefixes", {}).values(),
        ]
        assert values and set(values) <= set(SPLITS), name


def test_cli_summary(tmp_path, capsys):
    root = trees.affwild2(tmp_path / "aw")
    assert main(["--dataset", "affwild2", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "samples: 3 from 2 videos and 3 subjects; 2 with a frames folder, 3 with a media file" in out
    lines = out.splitlines()
    counts = lines.index("samples per split:")
    assert [line.split() for line in lines[counts + 1 : counts + 6]] == [
        ["split", "train", "validation"],
        ["task"],
        ["va", "1", "1"],
        ["expr", "2", "0"],
        ["au", "0", "1"],
    ]
    frac = lines.index("valid-label fraction:")
    assert [line.split() for line in lines[frac + 3 : frac + 6]] == [
        ["va", "0.750", "1.0"],
        ["expr", "0.875", "-"],
        ["au", "-", "0.5"],
    ]
    assert (
        "  expr (valid labels per class): Neutral 1, Anger 0, Disgust 0, Fear 1, Happiness 2, "
        "Sadness 1, Surprise 1, Other 1"
    ) in lines
    assert any(line.startswith("  au (positive rate): AU1 100.0%, AU2 0.0%") for line in lines)


def test_cli_error_and_help(tmp_path, capsys):
    assert main(["--dataset", "recola", "--root", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'none'}: dataset root not found")
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for name in DATASETS:
        assert f"  {name} " in help_text
    with pytest.raises(SystemExit):
        main(["--dataset", "nope"])
    assert f"choose from {NAMES.replace(', ', ', ')}" in capsys.readouterr().err.replace("'", "")
