"""train.run: the run folder contract, reproducibility, rebalancing, a learnable signal, the CLI."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from core.tasks import TASKS
from data_manifests.schema import EXPR_CLASSES
from extract.cache import CacheReader
from tests.train_helpers import TINY, context_dataset, random_dataset
from train.__main__ import build_parser, main
from train.config import TrainConfig
from train.data import load_split
from train.run import run_training
from train.windows import predict_split

pytestmark = pytest.mark.slow  # trains or extracts for seconds: `-m 'not slow'` skips it


def _cfg(tmp, **kw):
    return TrainConfig(cache_dir=str(tmp / "cache"), runs_dir=str(tmp / "runs"), **{**TINY, **kw})


@pytest.fixture(scope="module")
def expr_data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("expr")
    _, tab = random_dataset(tmp / "cache", "expr", n_videos=5, n_val=2, label_offset=2)
    return tmp, tab


@pytest.fixture(scope="module")
def expr_run(expr_data):
    tmp, tab = expr_data
    return run_training(_cfg(tmp, model="gru", task="expr"), table=tab)


def test_run_folder_contract(expr_run, expr_data):
    tmp, tab = expr_data
    assert expr_run.parent == tmp / "runs" and expr_run.name.startswith("synthetic-fer-expr-gru-none-s0-")
    assert sorted(p.name for p in expr_run.iterdir()) == [
        "config.json",
        "history.csv",
        "label_distribution.json",
        "logs",
        "metrics.json",
        "model.keras",
        "predictions_validation.csv",
    ]
    assert any(p.is_file() for p in (expr_run / "logs").rglob("*"))

    config = json.loads((expr_run / "config.json").read_text())
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    assert list(config)[: len(fields)] == fields
    assert config["data_root"] == "data/synthetic" and config["stride"] == 8
    assert config["backend"] == keras.backend.backend() and config["keras_version"] == keras.__version__
    assert config["cache"].endswith("synthetic/fer.h5") and config["cache_meta"]["embedding_dim"] == 8
    assert config["data"]["split"] == "official" and config["data"]["validation"]["samples"] == 2

    history = pd.read_csv(expr_run / "history.csv")
    assert {"epoch", "loss", "val_loss", "val_f1_macro"} <= set(history.columns) and len(history) == 2

    pred = pd.read_csv(expr_run / "predictions_validation.csv")
    assert list(pred.columns) == ["sample_id", "frame_index", "face", "valid", "true", "pred"] + [
        f"prob_{c}" for c in EXPR_CLASSES
    ]
    reader = CacheReader(config["cache"])
    assert len(pred) == sum(len(reader.read(v).frame_index) for v in ("v3", "v4"))  # every frame, once
    # true labels were joined by frame number: label rows start 2 frames after the cache rows
    src = tab.set_index("sample_id").loc["v3"]
    by_frame = dict(zip(src["frame_index"].tolist(), np.asarray(src["labels"]).tolist()))
    got = pred[(pred.sample_id == "v3") & (pred.valid == 1)]
    assert got["true"].tolist() == [by_frame[f] for f in got["frame_index"]]
    assert pred.loc[pred.sample_id == "v3", "valid"].iloc[:2].tolist() == [0, 0]  # frames with no label row

    metrics = json.loads((expr_run / "metrics.json").read_text())
    keys = {"f1_macro", "accuracy", "n_frames", "n_no_face", "task", "model", "epochs_run", "best_epoch"}
    assert keys <= set(metrics)
    assert {f"f1_{c}" for c in EXPR_CLASSES} <= set(metrics)
    assert metrics["n_frames"] == int(((pred.valid == 1) & (pred.face == 1)).sum())
    assert history["val_f1_macro"].max() == pytest.approx(metrics["f1_macro"], abs=1e-9)

    dist = json.loads((expr_run / "label_distribution.json").read_text())
    assert dist["before"] == dist["after"] and sum(dist["before"]["classes"].values()) == dist["before"]["units"]


def test_saved_model_reproduces_the_predictions(expr_run, expr_data):
    _, tab = expr_data
    model = keras.saving.load_model(expr_run / "model.keras", safe_mode=True)
    split, _ = load_split(
        CacheReader(json.loads((expr_run / "config.json").read_text())["cache"]),
        tab[tab.split == "validation"],
        TASKS["expr"],
    )
    probs = predict_split(model, split, 16, 8)
    pred = pd.read_csv(expr_run / "predictions_validation.csv")
    np.testing.assert_allclose(pred[[f"prob_{c}" for c in EXPR_CLASSES]].to_numpy(), probs, atol=1e-6)


def test_undersample_balances_training_and_leaves_validation(expr_run, expr_data):
    tmp, tab = expr_data
    run = run_training(_cfg(tmp, model="gru", task="expr", rebalance="undersample"), table=tab)
    dist = json.loads((run / "label_distribution.json").read_text())
    after = dist["after"]["classes"]
    assert len(set(after.values())) == 1 and after["Neutral"] == min(dist["before"]["classes"].values())
    base = pd.read_csv(expr_run / "predictions_validation.csv")
    bal = pd.read_csv(run / "predictions_validation.csv")
    cols = ["sample_id", "frame_index", "face", "valid", "true"]
    pd.testing.assert_frame_equal(base[cols], bal[cols])
    assert (
        json.loads((run / "metrics.json").read_text())["n_frames"]
        == json.loads((expr_run / "metrics.json").read_text())["n_frames"]
    )


def test_same_seed_same_metrics(tmp_path):
    _, tab = random_dataset(tmp_path / "cache", "va", n_videos=4, n_val=1, seed=3)
    cfg = _cfg(tmp_path, model="gru", task="va", rebalance="va-hist", va_bins=8, dropout=0.3)
    a, b = run_training(cfg, table=tab), run_training(cfg, table=tab)
    assert a != b
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    assert ma == mb and {"ccc_valence", "ccc_arousal", "ccc_mean", "pearson_valence", "pearson_arousal"} <= set(ma)
    assert (a / "label_distribution.json").read_text() == (b / "label_distribution.json").read_text()
    other = json.loads((run_training(dataclasses.replace(cfg, seed=1), table=tab) / "metrics.json").read_text())
    assert other["ccc_mean"] != ma["ccc_mean"]


def test_gru_uses_temporal_context(tmp_path):
    _, tab = context_dataset(tmp_path / "cache", seed=1)
    cfg = _cfg(
        tmp_path,
        task="expr",
        seq_len=32,
        stride=8,
        epochs=12,
        batch_size=16,
        units=32,
        lr=5e-3,
        dropout=0.0,
        patience=12,
    )
    scores = {
        m: json.loads((run_training(dataclasses.replace(cfg, model=m), table=tab) / "metrics.json").read_text())
        for m in ("gru", "avgpool", "frame")
    }
    acc = {m: s["accuracy"] for m, s in scores.items()}
    # Seed 1 measured: gru 0.795, avgpool 0.703, frame 0.540 (4 classes, chance 0.25).
    assert acc["gru"] > acc["avgpool"] + 0.04, acc
    assert acc["gru"] > acc["frame"] + 0.15, acc
    assert scores["gru"]["f1_macro"] > scores["avgpool"]["f1_macro"] + 0.04


def test_jax_backend_clip_task(tmp_path):
    script = (
        "import json, sys; from pathlib import Path; from tests.train_helpers import random_dataset;"
        "from train.config import TrainConfig; from train.run import run_training;"
        "tmp = Path(sys.argv[1]); _, tab = random_dataset(tmp / 'cache', 'clip', n_videos=6, n_val=2);"
        "run = run_training(TrainConfig(task='clip', model='bigru', cache_dir=str(tmp / 'cache'),"
        " runs_dir=str(tmp / 'runs'), seq_len=16, epochs=2, batch_size=4, layers=1, units=4, verbose=0), table=tab);"
        "print(run)"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    run = Path(out.stdout.strip().splitlines()[-1])
    assert json.loads((run / "config.json").read_text())["backend"] == "jax"
    pred = pd.read_csv(run / "predictions_validation.csv")
    assert pred["sample_id"].tolist() == ["v4", "v5"] and (pred["frame_index"] == 0).all()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "clip" and metrics["n_frames"] == 2 and 0 <= metrics["accuracy"] <= 1


def test_cli_help_lists_choices():
    text = build_parser().format_help()
    for name in (
        "gru",
        "bilstm",
        "avgpool",
        "frame",
        "va-hist",
        "undersample",
        "eri",
        "clip",
        "synthetic",
        "affwild2",
        "--rebalance",
        "--seq-len",
        "--data-root",
        "--runs-dir",
    ):
        assert name in text, name


def test_cli_errors_are_one_line(tmp_path, capsys):
    code = main(["--dataset", "synthetic", "--data-root", str(tmp_path / "nowhere"), "--runs-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nowhere" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.glob("synthetic-*"))


def test_missing_task_and_cache_are_explained(expr_data, tmp_path):
    _, tab = expr_data
    with pytest.raises(ValueError, match="has no 'va' labels \\(tasks with labels: expr\\); choose --task"):
        run_training(_cfg(tmp_path, task="va"), table=tab)
    with pytest.raises(ValueError, match="no such cache file; run `make extract` first"):
        run_training(_cfg(tmp_path, task="expr"), table=tab)
