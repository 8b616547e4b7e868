"""Audio-visual stage two: the fused models, the audio joined by frame number, modality dropout, the
run folder and make predict of an audio-visual run, on real Keras models and real HDF5 caches."""

import json
import logging

import keras
import numpy as np
import pytest

from core.registry import ConfigError
from core.tasks import TASKS
from extract.cache import CacheReader
from train.config import TrainConfig
from train.data import load_split
from train.fusion import FUSIONS, build_fused_model
from train.windows import WindowDataset, train_windows, window_rows

from .train_helpers import TINY, random_dataset, write_cache

D, A, T = 6, 4, 12


def _stats(dim):
    return np.zeros(dim, np.float32), np.ones(dim, np.float32)


def _inputs(rng, batch=3, face=None, heard=None):
    return {
        "embeddings": rng.normal(size=(batch, T, D)).astype(np.float32),
        "face": np.ones((batch, T), np.float32) if face is None else face,
        "audio": rng.normal(size=(batch, T, A)).astype(np.float32),
        "heard": np.ones((batch, T), np.float32) if heard is None else heard,
    }


def _model(fusion, model="gru", task="va"):
    cfg = TrainConfig(model=model, task=task, audio="logmel", fusion=fusion, layers=2, units=8)
    keras.utils.set_random_seed(0)
    return build_fused_model(cfg, TASKS[task], {"embeddings": _stats(D), "audio": _stats(A)})


@pytest.mark.parametrize("fusion", list(FUSIONS))
@pytest.mark.parametrize("model,task", [("gru", "va"), ("avgpool", "va"), ("frame", "expr"), ("bilstm", "clip")])
def test_every_model_with_every_fusion_builds_and_reloads(fusion, model, task, tmp_path):
    net = _model(fusion, model, task)
    x = _inputs(np.random.default_rng(0))
    out = np.asarray(net(x))
    want = (3, T, TASKS[task].outputs) if TASKS[task].level == "frame" else (3, TASKS[task].outputs)
    assert out.shape == want and np.isfinite(out).all()
    net.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(again(x)), out, atol=1e-6)


@pytest.mark.parametrize("fusion", list(FUSIONS))
def test_a_frame_without_a_face_is_predicted_from_its_audio(fusion):
    net = _model(fusion)
    rng = np.random.default_rng(1)
    face = np.ones((3, T), np.float32)
    face[:, 5] = 0.0
    x = _inputs(rng, face=face)
    base = np.asarray(net(x))
    changed = dict(x, embeddings=x["embeddings"].copy(), audio=x["audio"].copy())
    changed["embeddings"][:, 5] += 10.0  # the face stream is gated off on that frame: no effect
    np.testing.assert_allclose(np.asarray(net(changed))[:, 5], base[:, 5], atol=1e-6)
    changed["audio"][:, 5] += 3.0  # its audio still counts
    assert np.abs(np.asarray(net(changed))[:, 5] - base[:, 5]).max() > 1e-4


def test_late_fusion_averages_only_the_modalities_present():
    net = _model("late")
    x = _inputs(np.random.default_rng(2), heard=np.zeros((3, T), np.float32))
    visual = keras.Model(net.input, net.get_layer("visual_output").output)
    np.testing.assert_allclose(np.asarray(net(x)), np.asarray(visual(x)), atol=1e-6)
    x = dict(x, face=np.zeros((3, T), np.float32), heard=np.ones((3, T), np.float32))
    audio = keras.Model(net.input, net.get_layer("audio_output").output)
    np.testing.assert_allclose(np.asarray(net(x)), np.asarray(audio(x)), atol=1e-6)


def _audio_cache(root, visual_path, skip=()):
    """An audio cache of the visual cache's videos: two rows more on each side, feature 0 = frame number."""
    reader, videos = CacheReader(visual_path), {}
    for vid in reader.video_ids():
        if vid in skip:
            continue
        frames = reader.read(vid).frame_index
        frames = np.arange(max(frames[0] - 2, 1), frames[-1] + 3)
        feats = np.repeat(frames[:, None].astype(np.float32), A, axis=1)
        heard = frames % 7 != 0  # some frames without audio
        videos[vid] = (feats, frames, heard)
    return write_cache(root, videos, A, backbone="audio-logmel")


def test_audio_joins_the_faces_by_frame_number(tmp_path, caplog):
    visual, table = random_dataset(tmp_path, "va", n_videos=4, n_val=1, base_len=40)
    audio = CacheReader(_audio_cache(tmp_path, visual, skip=("v1",)))
    rows = table[table.split == "train"]
    with caplog.at_level(logging.WARNING):
        split, info = load_split(CacheReader(visual), rows, TASKS["va"], audio=audio)
    assert "1 samples have no audio rows" in caplog.text and info["samples_without_audio"] == 1
    n = split.n_frames
    heard = split.heard[:n]
    own = np.repeat(split.sample_ids, split.lengths) != "v1"
    np.testing.assert_array_equal(heard, own & (split.frame_index % 7 != 0))
    np.testing.assert_array_equal(split.audio[:n, 0][heard], split.frame_index[heard])
    assert not split.audio[:n][~own].any()
    # A frame with audio but no face counts in the loss; one with neither does not.
    eligible = split.eligible
    assert (eligible == split.valid & (split.face[:n] | heard)).all()
    assert (eligible & ~split.face[:n]).any()


def test_modality_dropout_blanks_one_stream_of_a_window(tmp_path):
    visual, table = random_dataset(tmp_path, "va", n_videos=4, n_val=1, base_len=200)
    audio = CacheReader(_audio_cache(tmp_path, visual))
    split, _ = load_split(CacheReader(visual), table[table.split == "train"], TASKS["va"], audio=audio)
    sample, start = train_windows(split, 16, 2)
    ds = WindowDataset(split, sample, start, 16, batch_size=len(sample), shuffle_seed=0, modality_dropout=0.5)
    x, _ = ds[0]
    rows = window_rows(split, ds.sample[ds._order], ds.start[ds._order], 16)
    no_face = (x["face"].max(axis=1) == 0) & (split.face[rows].max(axis=1) > 0)
    no_audio = (x["heard"].max(axis=1) == 0) & (split.heard[rows].max(axis=1) > 0)
    assert 0.15 < no_face.mean() < 0.35 and 0.15 < no_audio.mean() < 0.35 and not (no_face & no_audio).any()
    plain = WindowDataset(split, sample, start, 16, batch_size=len(sample), with_targets=False)  # prediction
    x, rows = plain[0], window_rows(split, sample, start, 16)
    assert (x["face"] == split.face[rows]).all() and (x["heard"] == split.heard[rows]).all()


def test_bad_audio_settings_are_one_line():
    with pytest.raises(ConfigError, match="--backbone none trains on audio alone: give --audio"):
        TrainConfig(backbone="none").validate()
    with pytest.raises(ConfigError, match="unknown fusion 'mid'.*early, model, late"):
        TrainConfig(audio="logmel", fusion="mid").validate()
    with pytest.raises(ConfigError, match="unknown audio extractor 'vggish'"):
        TrainConfig(audio="vggish").validate()


def test_an_audio_visual_run_and_its_predictions(tmp_path):
    from evaluate.predict import predict_run
    from train.run import run_training

    visual, table = random_dataset(tmp_path / "cache", "va", n_videos=4, n_val=1, base_len=60)
    _audio_cache(tmp_path / "cache", visual)
    cfg = TrainConfig(**TINY, cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"), task="va")
    run = run_training(TrainConfig(**{**cfg.__dict__, "audio": "logmel", "fusion": "model"}), table=table)
    assert "-fer+audio-logmel-va-gru-model-" in run.name
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["modalities"] == "audio-visual" and config["audio_cache"].endswith("audio-logmel.h5")
    assert config["audio_cache_meta"]["backbone"] == "audio-logmel"
    summary = predict_run(run, "validation", table=table)
    assert summary["frames_without_input"] < summary["frames_without_face"]
    csv = (run / "predictions_validation" / "per_video" / "v3.csv").read_text().splitlines()
    assert csv[0].startswith("frame_index,image_location,face,filled,heard,")
    # Audio alone: BACKBONE=none reads the audio cache as its frames.
    alone = run_training(TrainConfig(**{**cfg.__dict__, "backbone": "none", "audio": "logmel"}), table=table)
    assert "-audio-logmel-va-gru-none-" in alone.name
    assert json.loads((alone / "config.json").read_text())["data"]["modalities"] == "audio"
    with pytest.raises(ValueError, match="audio-mfcc.h5: no such cache file; run `make extract` first"):
        run_training(TrainConfig(**{**cfg.__dict__, "audio": "mfcc"}), table=table)


@pytest.mark.slow
def test_model_fusion_finds_the_arousal_that_only_one_stream_holds(tmp_path):
    """The synthetic voice follows arousal while someone talks; the faces show its events, not its
    drift. The model-level fusion GRU must beat both single-stream GRUs on arousal CCC."""
    from data_manifests.synthetic import generate
    from extract.__main__ import main
    from train.run import run_training

    root, cache = tmp_path / "synthetic", tmp_path / "cache"
    generate(root, seed=0, n_clips=48, workers=2)
    args = ["--dataset", "synthetic", "--data-root", str(root), "--cache-dir", str(cache), "--audio", "logmel"]
    assert main(args) == 0
    common = dict(data_root=str(root), cache_dir=str(cache), runs_dir=str(tmp_path / "runs"), task="va")
    common.update(epochs=15, seq_len=32, verbose=0, seed=0)
    arousal = {}
    for name, streams in {
        "visual": {},
        "audio": {"backbone": "none", "audio": "logmel"},
        "av": {"audio": "logmel"},
    }.items():
        run = run_training(TrainConfig(**common, **streams))
        arousal[name] = json.loads((run / "metrics.json").read_text())["ccc_arousal"]
    # Measured (seed 0, 2 cores): visual 0.46, audio 0.55, audio-visual 0.70.
    assert arousal["av"] >= arousal["visual"] + 0.05 and arousal["av"] >= arousal["audio"] + 0.05, arousal
