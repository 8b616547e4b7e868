"""End-to-end CNN+RNN: clips cut like stage two's windows, a frozen warm-up that leaves the
backbone as it was, unfreezing that trains only the top blocks, and a stage-two run folder that
the report puts beside the two-stage runs. Real crops (the synthetic dataset), a real Keras model."""

import json

import keras
import numpy as np
import pandas as pd
import pytest

from core.registry import ConfigError
from core.tasks import TASKS
from data_manifests.synthetic import generate
from evaluate.report import collect_runs, comparison_tables
from finetune.__main__ import main as cli_main
from finetune.data import Augment
from finetune.joint import ClipDataset, JointConfig, build_joint, clip_split, run_joint
from finetune.model import build_model, set_trainable
from tests.train_helpers import tiny_crop_table
from train.windows import train_windows

pytestmark = pytest.mark.slow  # trains or extracts for seconds: `-m 'not slow'` skips it

SMALL = dict(
    dataset="synthetic",
    backbone="fer",
    task="expr",
    seq_len=8,
    layers=1,
    units=16,
    warmup_epochs=3,
    epochs=1,
    batch_size=8,
    lr=1e-2,
    finetune_lr=1e-3,
    unfreeze_blocks=1,
    stats_frames=64,
    seed=0,
    verbose=0,
)


def test_clips_keep_every_labelled_frame_and_mark_the_faceless(tmp_path):
    split, paths = clip_split(tiny_crop_table(tmp_path), TASKS["expr"], None)
    assert split.sample_ids == ["v1"] and split.n_frames == 6
    np.testing.assert_array_equal(split.face, [True, True, True, False, True, True, False])  # + the padding row
    np.testing.assert_array_equal(split.valid, [True, False, True, True, True, True])
    np.testing.assert_array_equal(split.eligible, [True, False, True, False, True, True])  # scored frames
    assert [p.rsplit("/", 1)[-1] for p in paths] == [
        "00001.jpg",
        "00002.jpg",
        "00003.jpg",
        "",
        "00005.jpg",
        "00006.jpg",
        "",
    ]
    cfg = JointConfig(seq_len=4, batch_size=2).resolved()
    sample, start = train_windows(split, cfg.seq_len, cfg.stride)
    assert start.tolist() == [0, 2]
    x, y = ClipDataset(split, paths, None, sample, start, cfg, (8, 8, 1))[0]
    assert x["pixels"].shape == (2, 4, 8, 8, 1) and y.shape == (2, 4, 2)  # class id, loss mask
    np.testing.assert_array_equal(x["face"], [[1, 1, 1, 0], [1, 0, 1, 1]])
    assert not x["pixels"][0, 3].any() and x["pixels"][0, 2].mean() == pytest.approx(
        0.299 * 120 + 0.587 * 120 + 0.114 * 120, abs=2
    )
    np.testing.assert_array_equal(y[0, :, -1], [1, 0, 1, 0])  # loss mask: frame 2 unannotated, frame 4 faceless
    # Augmented, every frame of a clip is transformed alike: one brightness factor per clip.
    augmented = ClipDataset(
        split,
        paths,
        None,
        sample,
        start,
        cfg,
        (8, 8, 1),
        shuffle_seed=3,
        augment=Augment(flip=True, shift=0.1, rotation=10, brightness=0.2),
    )
    x, _ = augmented[0]
    grey = {0: 40, 1: 80, 2: 120, 4: 200, 5: 240}  # row -> the value of its uniform jpg (row 3: no face)
    per_clip = []
    for b, pick in enumerate(augmented._order[:2]):
        first = augmented.start[pick]
        factors = [
            x["pixels"][b, t].mean() / grey[first + t] for t in range(4) if grey.get(first + t, 255) < 212
        ]  # present, and not clipped at 255 by a 1.2 factor
        assert len(factors) >= 2 and max(factors) - min(factors) < 0.02
        per_clip.append(np.mean(factors))
    assert abs(per_clip[0] - per_clip[1]) > 0.02  # a draw per clip, not per batch


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("joint")
    generate(root / "data", seed=2, n_clips=6, min_frames=40, max_frames=60, raw_videos=0)
    run = run_joint(JointConfig(**SMALL, data_root=str(root / "data"), runs_dir=str(root / "runs"), run_name="j"))
    return root, run


def test_joint_run_folder_is_a_stage_two_run(joint_run):
    root, run = joint_run
    files = sorted(p.name for p in run.iterdir())
    assert files == [
        "config.json",
        "history.csv",
        "label_distribution.json",
        "metrics.json",
        "model.keras",
        "predictions_validation.csv",
    ]
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert config["model"] == metrics["model"] == "joint-gru" and config["rnn"] == "gru"
    assert config["data"]["crops"] == "cropped_aligned" and config["data"]["train_windows"] > 0
    predictions = pd.read_csv(run / "predictions_validation.csv")
    assert len(predictions) == config["data"]["validation_frames"]  # every validation frame, once
    assert metrics["n_frames"] == int((predictions.valid & predictions.face).sum())
    assert metrics["epochs_run"] == 4 and 0 <= metrics["f1_macro"] <= 1
    # Well above always predicting the majority class (macro F1 = its F1 / 8 classes, 0.07 here);
    # measured (seed 0, 2-core CPU, TensorFlow): 0.271.
    truth = predictions.true[(predictions.valid == 1) & (predictions.face == 1)]
    share = truth.value_counts(normalize=True).iloc[0]
    assert metrics["f1_macro"] > 2 * share / (1 + share) / 8 + 0.15
    # The report lists it beside the stage-two runs of the same backbone and task.
    ((key, table),) = comparison_tables(collect_runs(root / "runs"))
    assert (key["backbone"], key["task"]) == ("fer", "expr") and table.model.tolist() == ["joint-gru"]


def _changed(backbone) -> set[str]:
    pretrained = build_model("fer", (), "pretrained", "", TASKS["expr"], 0, 0.0, seed=0).get_layer("backbone")
    return {
        layer.name
        for layer, ref in zip(backbone.layers, pretrained.layers)
        if any(not np.array_equal(a, b) for a, b in zip(layer.get_weights(), ref.get_weights()))
    }


def test_warmup_freezes_the_backbone_and_unfreezing_trains_only_the_top_block(joint_run):
    top = {"separable_conv2d_7", "separable_conv2d_8", "conv2d_6"}  # block 4 of mini-Xception
    _, run = joint_run
    saved = keras.saving.load_model(run / "model.keras", safe_mode=True, compile=False)
    assert _changed(saved.get_layer("frames").layer.get_layer("backbone")) <= top  # whichever epoch was best
    # The phases of run_joint on one batch: frozen, nothing moves; top block unfrozen, only it moves.
    cfg = JointConfig(**SMALL).resolved()
    frame_model = build_model("fer", (), "pretrained", "", TASKS["expr"], 0, 0.0, seed=0)
    model = build_joint(cfg, TASKS["expr"], np.zeros(128), np.ones(128), frame_model)
    rng = np.random.default_rng(0)
    x = {"pixels": rng.uniform(0, 255, (2, 8, 64, 64, 1)).astype(np.float32), "face": np.ones((2, 8), np.float32)}
    y = np.concatenate([rng.integers(0, 8, (2, 8, 1)), np.ones((2, 8, 1))], axis=-1).astype(np.float32)
    loss = TASKS["expr"].make_loss(cfg.train_config())
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    model.train_on_batch(x, y)
    assert _changed(frame_model.get_layer("backbone")) == set()
    set_trainable(frame_model, 1, train_batchnorm=False)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    model.train_on_batch(x, y)
    assert _changed(frame_model.get_layer("backbone")) == top


def test_joint_cli_lists_models_and_refuses_bad_settings(capsys):
    with pytest.raises(SystemExit):
        cli_main(["joint", "--help"])
    out = capsys.readouterr().out
    assert "Models: gru, lstm, bigru, bilstm, frame, avgpool" in out and "--seq-len" in out
    with pytest.raises(ConfigError, match=r"--task must be one of va, expr, au \(per-frame labels\), got 'eri'"):
        JointConfig(task="eri").validate()
    with pytest.raises(ValueError, match="unknown model 'tcn'"):
        JointConfig(model="tcn").validate()
