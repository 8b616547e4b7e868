"""core.tasks: adding a task is one entry. A toy task registered here runs train -> predict -> report
with no other edit, and the official entries keep their documented layouts."""

import json

import numpy as np
import pytest

from core.tasks import TASKS, class_task
from data_manifests.schema import LabelSpec
from evaluate.predict import predict_run
from evaluate.report import build_report
from tests.train_helpers import row, table, write_cache
from train.config import TrainConfig
from train.run import run_training

pytestmark = pytest.mark.slow  # trains or extracts for seconds: `-m 'not slow'` skips it

LEVELS = ("low", "mid", "high")
TOY = class_task(
    "toy_arousal_level",
    LabelSpec(LEVELS, "class", -1),
    "three arousal levels per frame (a toy task registered by a test)",
    submission=True,
)


@pytest.fixture(scope="module")
def toy_task():
    TASKS.register(TOY.name, TOY)
    yield TOY
    TASKS.unregister(TOY.name)


@pytest.fixture(scope="module")
def toy_run(toy_task, tmp_path_factory):
    """A cache whose embeddings carry the level in their first dimension, its table and a GRU run."""
    tmp = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    videos, rows = {}, []
    for i in range(6):
        t = 60 + 7 * i
        level = np.repeat(rng.integers(0, 3, t // 10 + 1), 10)[:t]
        face = rng.random(t) > 0.1
        emb = rng.normal(size=(t, 6))
        emb[:, 0] += 3.0 * level
        frames = np.arange(1, t + 1)
        videos[f"v{i}"] = (emb * face[:, None], frames, face)
        rows.append(row(f"v{i}", toy_task.name, "validation" if i >= 4 else "train", level, np.ones(t, bool), frames))
    write_cache(tmp / "cache", videos, 6)
    tbl = table(rows)
    cfg = TrainConfig(
        task=toy_task.name,
        cache_dir=str(tmp / "cache"),
        runs_dir=str(tmp / "runs"),
        seq_len=16,
        epochs=4,
        batch_size=8,
        layers=1,
        units=16,
        jit_compile="off",
        verbose=0,
    )
    return tmp, run_training(cfg, table=tbl), tbl


def test_toy_task_trains_predicts_and_reports(toy_run):
    tmp, run_dir, tbl = toy_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["task"] == TOY.name and {f"f1_{n}" for n in LEVELS} <= set(metrics)
    assert metrics["accuracy"] > 0.5  # the level is in the embedding: a model that learns nothing gets ~1/3

    summary = predict_run(run_dir, "validation", runs_dir=str(tmp / "runs"), table=tbl)
    lines = (run_dir / "predictions_validation" / f"abaw_{TOY.name}.txt").read_text().splitlines()
    assert lines[0] == "image_location,low,mid,high"
    assert len(lines) - 1 == summary["frames"] == 88 + 95
    assert all(line.split(",")[1] in ("0", "1", "2") for line in lines[1:])

    paths = build_report(tmp / "runs", tmp / "reports")
    html = paths["html"].read_text()
    assert f"task {TOY.name}" in html and "confusion_counts.png" in html
    assert (tmp / "reports" / "runs" / run_dir.name / "confusion_counts.csv").is_file()


def test_official_entries_layouts():
    assert [n for n in TASKS if n != TOY.name] == ["va", "expr", "au", "clip", "eri"]
    assert TASKS["va"].column_names() == ["true_valence", "true_arousal", "pred_valence", "pred_arousal"]
    assert TASKS["expr"].column_names()[:3] == ["true", "pred", "prob_Neutral"]
    au = TASKS["au"].column_names()
    assert au[0] == "true_AU1" and au[12] == "prob_AU1" and au[24] == "pred_AU1" and len(au) == 36
    official = {n: t for n, t in TASKS.items() if n != TOY.name}
    assert [n for n, t in official.items() if t.submission] == ["va", "expr", "au"]
    assert {n: t.monitor for n, t in official.items()} == {
        "va": "ccc_mean",
        "expr": "f1_macro",
        "au": "au_f1_mean",
        "clip": "f1_macro",
        "eri": "pearson_mean",
    }


def test_threshold_lives_on_the_entry():
    """The AU 0/1 decision at 0.5 is one field: the predictions table and the submission agree with it."""
    au = TASKS["au"]
    pred = np.full((2, 12), 0.4, np.float32)
    pred[0, 0] = 0.5
    cols = au.prediction_columns(np.zeros((2, 12)), pred)
    assert cols["pred_AU1"].tolist() == [1, 0]
    assert au.submission_values(pred)["AU1"].tolist() == [1, 0]
    assert au.frame_outputs(pred)["AU1"].tolist() == [1, 0]
