"""evaluate.predict: real runs (train.run.run_training on tiny real caches) -> every frame of a split
in the ABAW submission format and per-video CSVs, face-less frames included."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from data_manifests.schema import AU_NAMES, EXPR_CLASSES, LABELS
from evaluate.__main__ import main
from evaluate.predict import fill_nearest, predict_run, submission_header
from extract.cache import CacheReader
from tests.train_helpers import random_dataset, write_cache
from train.config import TrainConfig
from train.run import run_training

pytestmark = pytest.mark.slow  # trains or extracts for seconds: `-m 'not slow'` skips it

TINY = dict(seq_len=16, stride=8, epochs=2, batch_size=8, layers=1, units=8, jit_compile="off", verbose=0)
SPLIT_DIRS = {"train": "Train_Set", "validation": "Validation_Set"}


def _cfg(tmp, **kw):
    return TrainConfig(cache_dir=str(tmp / "cache"), runs_dir=str(tmp / "runs"), **{**TINY, **kw})


def _frames(cache, sample_ids):
    reader = CacheReader(cache)
    return {v: reader.read(v) for v in sample_ids}


def _read_abaw(path):
    lines = path.read_text().splitlines()
    return lines[0], [line.split(",") for line in lines[1:]]


@pytest.fixture(scope="module")
def expr_disk(tmp_path_factory):
    """An Aff-Wild2-layout tree on disk (dataset "synthetic") with EXPR labels, its cache, a gru run."""
    tmp = tmp_path_factory.mktemp("expr_disk")
    rng = np.random.default_rng(3)
    videos, root = {}, tmp / "data"
    for i in range(5):
        t = 50 + 11 * i
        face = rng.random(t) > 0.2
        face[:2] = [False, True]  # every video starts with a face-less frame
        videos[f"vid{i}"] = (rng.normal(size=(t, 8)) * face[:, None], np.arange(1, t + 1), face)
        labels = np.where(rng.random(t) < 0.1, -1, rng.integers(0, 8, t))
        split = "validation" if i >= 3 else "train"
        folder = root / "annotations/EXPR_Classification_Challenge" / SPLIT_DIRS[split]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"vid{i}.txt").write_text(",".join(EXPR_CLASSES) + "\n" + "\n".join(map(str, labels)) + "\n")
    cache = write_cache(tmp / "cache", videos, 8)
    run = run_training(_cfg(tmp, model="gru", task="expr", data_root=str(root)))
    return tmp, run, cache


@pytest.fixture(scope="module")
def va_frame(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("va")
    cache, table = random_dataset(tmp / "cache", "va", n_videos=5, n_val=2, label_offset=1)
    return tmp, run_training(_cfg(tmp, model="frame", task="va"), table=table), cache, table


def test_cli_writes_abaw_expr_for_every_frame(expr_disk, capsys):
    tmp, run, cache = expr_disk
    assert main(["predict", "--run", run.name, "--split", "validation", "--runs-dir", str(tmp / "runs")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    out = run / "predictions_validation"
    assert sorted(p.name for p in out.iterdir()) == ["abaw_expr.txt", "per_video", "summary.json"]
    assert not list(run.glob("predictions_validation.partial")) + list(run.glob("predictions_validation.old"))
    header, rows = _read_abaw(out / "abaw_expr.txt")
    assert header == "image_location,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
    cached = _frames(cache, ["vid3", "vid4"])
    expected = [f"{v}/{f:05d}.jpg" for v in ("vid3", "vid4") for f in cached[v].frame_index]
    assert [r[0] for r in rows] == expected  # one row per cached frame, face-less ones included
    assert {len(r) for r in rows} == {2} and {int(r[1]) for r in rows} <= set(range(8))
    no_face = sum(int((~cached[v].face_mask).sum()) for v in cached)
    assert summary["frames"] == len(rows) and summary["frames_without_face"] == no_face > 0
    assert summary["no_face_policy"] == "model" and summary["filled_from_nearest"] == 0

    # the same model and windows as the validation predictions: identical classes on every frame
    val = pd.read_csv(run / "predictions_validation.csv")
    assert [int(r[1]) for r in rows] == val["pred"].tolist()
    per_video = pd.read_csv(out / "per_video" / "vid4.csv")
    assert list(per_video.columns) == ["frame_index", "image_location", "face", "filled", "class", "class_name"] + [
        f"prob_{c}" for c in EXPR_CLASSES
    ]
    assert per_video["face"].tolist() == cached["vid4"].face_mask.astype(int).tolist()
    assert per_video["class_name"].tolist() == [EXPR_CLASSES[c] for c in per_video["class"]]
    np.testing.assert_allclose(per_video[[f"prob_{c}" for c in EXPR_CLASSES]].sum(axis=1), 1.0, atol=1e-4)

    # a second call replaces the folder
    assert main(["predict", "--run", str(run), "--split", "train", "--runs-dir", str(tmp / "runs")]) == 0
    _, train_rows = _read_abaw(run / "predictions_train" / "abaw_expr.txt")
    assert train_rows[0][0] == "vid0/00001.jpg" and len(train_rows) == 50 + 61 + 72


def test_va_frame_model_fills_faceless_frames_from_the_nearest_face(va_frame):
    tmp, run, cache, table = va_frame
    summary = predict_run(run.name, "validation", runs_dir=tmp / "runs", table=table)
    assert summary["no_face_policy"] == "nearest"  # auto: the frame model has no context
    header, rows = _read_abaw(run / "predictions_validation" / "abaw_va.txt")
    assert header == "image_location,valence,arousal"
    values = np.array([[float(r[1]), float(r[2])] for r in rows])
    assert np.all(np.abs(values) <= 1.0)
    val = pd.read_csv(run / "predictions_validation.csv")
    assert [r[0] for r in rows] == [f"{s}/{f:05d}.jpg" for s, f in zip(val.sample_id, val.frame_index)]
    face = val["face"].to_numpy(bool)
    model_out = val[["pred_valence", "pred_arousal"]].to_numpy()
    np.testing.assert_allclose(values[face], model_out[face], atol=2e-6)  # face frames: the model's output
    for sample in ("v3", "v4"):
        rows_s = np.flatnonzero(val.sample_id.to_numpy() == sample)
        frames = val.frame_index.to_numpy()[rows_s]
        with_face = rows_s[face[rows_s]]
        for r in rows_s[~face[rows_s]]:
            dist = np.abs(val.frame_index.to_numpy()[with_face] - val.frame_index.to_numpy()[r])
            src = with_face[np.flatnonzero(dist == dist.min())[0]]  # nearest, earlier on a tie
            np.testing.assert_allclose(values[r], model_out[src], atol=2e-6)
        per_video = pd.read_csv(run / "predictions_validation" / "per_video" / f"{sample}.csv")
        assert per_video["frame_index"].tolist() == frames.tolist()
        assert per_video["filled"].tolist() == (~face[rows_s]).astype(int).tolist()
    assert summary["filled_from_nearest"] == int((~face).sum()) > 0

    kept = predict_run(run.name, "validation", runs_dir=tmp / "runs", table=table, no_face="model")
    _, rows = _read_abaw(run / "predictions_validation" / "abaw_va.txt")
    np.testing.assert_allclose([[float(r[1]), float(r[2])] for r in rows], model_out, atol=2e-6)
    assert kept["filled_from_nearest"] == 0


def test_au_and_clip_tasks(tmp_path):
    cache, table = random_dataset(tmp_path / "cache", "au", n_videos=4, n_val=2)
    run = run_training(_cfg(tmp_path, model="avgpool", task="au"), table=table)
    predict_run(run, "validation", runs_dir=tmp_path / "runs", table=table)
    header, rows = _read_abaw(run / "predictions_validation" / "abaw_au.txt")
    assert header == "image_location," + ",".join(AU_NAMES) == submission_header("au")
    val = pd.read_csv(run / "predictions_validation.csv")
    assert len(rows) == len(val) and {len(r) for r in rows} == {13}
    got = np.array([[int(x) for x in r[1:]] for r in rows])
    assert set(np.unique(got)) <= {0, 1}
    np.testing.assert_array_equal(got, val[[f"pred_{a}" for a in AU_NAMES]].to_numpy())

    cache, table = random_dataset(tmp_path / "eri" / "cache", "eri", n_videos=4, n_val=2)
    run = run_training(_cfg(tmp_path / "eri", model="gru", task="eri"), table=table)
    summary = predict_run(run, "validation", runs_dir=tmp_path / "eri" / "runs", table=table)
    out = run / "predictions_validation"
    assert sorted(p.name for p in out.iterdir()) == ["clips.csv", "summary.json"]  # no ABAW format for clips
    clips = pd.read_csv(out / "clips.csv")
    assert clips["sample_id"].tolist() == ["v2", "v3"]
    values = clips[list(LABELS["eri"].names)].to_numpy()
    assert values.shape == (2, 7) and np.all((values >= 0) & (values <= 1))
    assert summary["samples"] == 2 and summary["files"] == {"clips": str(out / "clips.csv")}


def test_fill_nearest_ties_and_faceless_videos():
    pred = np.arange(8, dtype=float)[:, None] * 10
    face = np.array([0, 1, 0, 0, 1, 0, 0, 0], bool)
    frames = np.array([1, 2, 3, 4, 5, 1, 2, 3])
    out, filled = fill_nearest(pred, face, frames, np.array([0, 5, 8]))
    # frame 1 <- 2; frame 3 is 1 from 2 and 2 from 5 -> 2; frame 4 is 2 from 2 and 1 from 5 -> 5;
    # the second video has no face and keeps its own outputs
    assert out.ravel().tolist() == [10, 10, 10, 40, 40, 50, 60, 70]
    assert filled.tolist() == [True, False, True, True, False, False, False, False]
    out, _ = fill_nearest(
        np.array([[1.0], [2.0], [3.0]]), np.array([1, 0, 1], bool), np.array([1, 2, 3]), np.array([0, 3])
    )
    assert out.ravel().tolist() == [1, 1, 3]  # a tie takes the earlier frame


def test_errors_name_the_problem_and_the_fix(expr_disk, va_frame, tmp_path):
    tmp, run, cache = expr_disk
    runs = tmp / "runs"
    with pytest.raises(ValueError, match="unknown split 'dev'; choose one of: train, validation, test"):
        predict_run(run.name, "dev", runs_dir=runs)
    with pytest.raises(
        ValueError,
        match=r"has no 'test' samples for task 'expr' \(splits with them: train, "
        r"validation\); choose SPLIT among those",
    ):
        predict_run(run.name, "test", runs_dir=runs)
    with pytest.raises(ValueError, match="unknown --no-face policy 'skip'; choose one of: auto, model, nearest"):
        predict_run(run.name, "validation", runs_dir=runs, no_face="skip")
    with pytest.raises(FileNotFoundError, match=r"no run folder with a config.json \(RUN=nope, .*1 runs there, e.g. "):
        predict_run("nope", "validation", runs_dir=runs)

    vtmp, vrun, _, table = va_frame
    ghost = table[(table.sample_id == "v4")].assign(sample_id="ghost")
    with pytest.raises(
        ValueError,
        match=r"1 of 3 'validation' samples are not in the cache \(e.g. 'ghost'\); "
        r"run `make extract`",
    ):
        predict_run(vrun.name, "validation", runs_dir=vtmp / "runs", table=pd.concat([table, ghost]))
    other = write_cache(tmp_path / "other", {"v3": (np.zeros((5, 4)), np.arange(1, 6), np.ones(5, bool))}, 4)
    with pytest.raises(
        ValueError,
        match=rf"{other}: embedding_dim is 4 but the run was trained on 8 .*"
        r"point CACHE_DIR at the cache the run used",
    ):
        predict_run(vrun.name, "validation", runs_dir=vtmp / "runs", table=table, cache_dir=str(tmp_path / "other"))
    copy = tmp_path / "runs" / "copy"
    shutil.copytree(vrun, copy, ignore=shutil.ignore_patterns("model.keras", "predictions_*"))
    with pytest.raises(FileNotFoundError, match="model.keras: the run saved no model"):
        predict_run("copy", "validation", runs_dir=tmp_path / "runs", table=table)
    assert not (copy / "predictions_validation").exists()
