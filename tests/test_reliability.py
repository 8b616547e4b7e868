"""Faults and bad settings, as a user meets them: each case asserts the exit code, the one-line
message naming the file and the fix, and that nothing already computed changed.

The matrix (issue "Reliability"): concurrent extractions on one cache, a damaged chunk, non-finite
embeddings, a loss that turns NaN, a cache renamed to another backbone, out-of-range numeric
options, paths with spaces and non-ASCII characters, run folders whose JSON is not an object.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from core.registry import ConfigError
from core.run_folder import RunFolder
from data_manifests.loader import load_dataset, samples
from data_manifests.synthetic import generate
from evaluate.report import build_report
from extract.__main__ import main as extract_main
from extract.cache import CacheError, CacheLock, CacheReader, cache_path
from extract.pipeline import ExtractConfig, run_extract
from tests.train_helpers import random_dataset, write_cache
from train.__main__ import main as train_main
from train.config import TrainConfig
from train.run import StopOnNaN, run_training

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(seq_len=16, epochs=2, batch_size=8, layers=1, units=8, jit_compile="off", verbose=0)


def _digest(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    """A synthetic Aff-Wild2 tree of 4 short clips and its complete fer cache."""
    root = tmp_path_factory.mktemp("reliability")
    generate(root / "data", seed=3, n_clips=4, min_frames=20, max_frames=24, raw_videos=0)
    cfg = ExtractConfig(dataset="synthetic", data_root=str(root / "data"), cache_dir=str(root / "cache"), workers=1)
    summary = run_extract(cfg)
    assert summary["done"] >= 4 and not summary["failed"]
    return root, cfg


# 1. A cache has one owner at a time.
def test_a_second_extraction_refuses_while_the_first_holds_the_cache(small_tree, capsys):
    root, cfg = small_tree
    cache = cache_path(cfg.cache_dir, cfg.dataset, cfg.backbone)
    before = _digest(cache)
    with CacheLock(cache):
        code = extract_main(["--dataset", "synthetic", "--data-root", cfg.data_root, "--cache-dir", cfg.cache_dir])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"pid {os.getpid()}" in err[0] and str(cache) in err[0] and "wait for it" in err[0]
    assert _digest(cache) == before


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3))
def test_concurrent_extractions_never_lose_a_video(tmp_path, trial):
    """Two `python -m extract` on one CACHE_DIR started 0-1 s apart: one extracts, the other says who
    holds the cache (exit 2) or finds it complete; every video ends in the cache exactly once."""
    generate(tmp_path / "data", seed=trial, n_clips=4, min_frames=20, max_frames=30, raw_videos=0)
    cmd = [
        sys.executable,
        "-m",
        "extract",
        "--dataset",
        "synthetic",
        "--data-root",
        str(tmp_path / "data"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--workers",
        "1",
    ]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5 * trial)
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out, err = first.communicate(timeout=300)
    results = sorted([(first.returncode, err), (second.returncode, second.stderr)], key=lambda r: r[0])
    assert results[0][0] == 0
    assert results[1][0] in (0, 2)
    if results[1][0] == 2:
        assert "is being written by another extraction (pid" in results[1][1] and "Traceback" not in results[1][1]
    expected = sorted(samples(load_dataset("synthetic", tmp_path / "data"))["sample_id"])
    assert CacheReader(cache_path(tmp_path / "cache", "synthetic", "fer")).video_ids() == expected
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and f"0 videos done, {len(expected)} already cached" in rerun.stdout


# 2. Damaged or non-finite data never trains silently.
def test_a_damaged_chunk_fails_to_read_and_names_the_video(tmp_path, capsys):
    cache, table = random_dataset(tmp_path / "cache", "expr", n_videos=3, n_val=1)
    with h5py.File(cache, "r") as f:
        dset = f["videos/v1/embeddings"]
        assert dset.fletcher32
        offset = dset.id.get_chunk_info(0).byte_offset
    with open(cache, "r+b") as fh:
        fh.seek(offset + 10)
        byte = fh.read(1)
        fh.seek(offset + 10)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CacheError, match=r"video 'v1' is damaged .*checksum.*make extract"):
        CacheReader(cache).read("v1")
    cfg = TrainConfig(cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"), **TINY)
    with pytest.raises(ValueError, match="video 'v1' is damaged"):
        run_training(cfg, table=table)
    assert not list((tmp_path / "runs").glob("*/metrics.json"))


def test_non_finite_embeddings_are_refused_at_load(tmp_path):
    emb = np.ones((30, 4), np.float32)
    emb[7, 2] = np.inf
    cache = write_cache(tmp_path, {"v0": (emb, np.arange(1, 31), np.ones(30, bool))}, 4)
    with pytest.raises(CacheError, match=r"video 'v0' holds non-finite embeddings \(1 values\)"):
        CacheReader(cache).read("v0")


def test_a_loss_that_turns_nan_stops_the_run_without_success_files():
    callback = StopOnNaN()
    callback.on_train_batch_end(0, {"loss": 0.5})
    with pytest.raises(FloatingPointError, match="loss became nan at batch 3"):
        callback.on_train_batch_end(3, {"loss": float("nan")})


# 3. A cache is what its attributes say, whatever its file name.
def test_a_cache_renamed_to_another_backbone_is_refused(tmp_path, capsys):
    cache, table = random_dataset(tmp_path / "cache", "expr", n_videos=3, n_val=1)
    cache.rename(cache.with_name("resnet50.h5"))
    cfg = TrainConfig(backbone="resnet50", cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"), **TINY)
    with pytest.raises(ValueError, match="records backbone 'fer', not 'resnet50'"):
        run_training(cfg, table=table)


# 5. Numeric options are checked at the command line.
@pytest.mark.parametrize(
    "flag, value, why",
    [
        ("--batch", "0", "--batch must be >= 1"),
        ("--batch", "-1", "--batch must be >= 1"),
        ("--workers", "-1", "--workers must be >= 0"),
        ("--workers", "1000", "--workers must be at most"),
        ("--chunk", "0", "--chunk must be >= 1"),
        ("--detect-every", "0", "--detect-every must be >= 1"),
        ("--min-score", "1.5", "--min-score must be in [0, 1]"),
        ("--margin", "-0.1", "--margin must be in [0, 2]"),
        ("--margin", "2.5", "or -1 (the backbone's)"),
        ("--limit", "-2", "--limit must be >= 0"),
    ],
)
def test_extract_numeric_options(small_tree, capsys, flag, value, why):
    root, cfg = small_tree
    cache = cache_path(cfg.cache_dir, cfg.dataset, cfg.backbone)
    before = _digest(cache)
    code = extract_main(["--data-root", cfg.data_root, "--cache-dir", cfg.cache_dir, flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and why in err[0]
    assert _digest(cache) == before


def test_train_rejects_an_unknown_backbone_by_name(tmp_path, capsys):
    code = train_main(["--backbone", "foo", "--cache-dir", str(tmp_path), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Unknown backbone 'foo'" in err and "make extract first" not in err


# 6. Paths with a space and non-ASCII characters survive the Makefile.
@pytest.mark.slow
def test_make_quotes_paths(tmp_path):
    odd = tmp_path / "my data ü"
    result = subprocess.run(
        ["make", "--no-print-directory", "train", f"DATA_ROOT={odd}", f"CACHE_DIR={odd}/cache", f"RUNS_DIR={odd}/runs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "unrecognized arguments" not in result.stderr
    assert f"{odd}" in result.stderr  # the dataset error names the folder, whole


# 7-8. Broken run folders are listed, not fatal; and say so.
@pytest.mark.parametrize("content", ["[1, 2]", "null", "3"])
def test_run_json_that_is_not_an_object(tmp_path, content):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"task": "expr", "model": "gru", "dataset": "synthetic"}))
    (run / "metrics.json").write_text(content)
    build_report(tmp_path / "runs", tmp_path / "reports")
    summary = (tmp_path / "reports" / "summary.md").read_text()
    assert "metrics.json is unreadable" in summary and "not an object" in summary
    (run / "config.json").write_text(content)
    with pytest.raises(ValueError, match="config.json: holds a JSON"):
        RunFolder(run).read_config()


def test_train_config_errors_are_config_errors():
    with pytest.raises(ConfigError, match="--batch-size must be >= 1"):
        TrainConfig(batch_size=0).validate()


# 9. Training survives a kill.
KILLED_RUN = """
import os, signal, sys
import keras, pandas as pd
import train.run as run
from train.config import TrainConfig

cfg = TrainConfig(**eval(sys.argv[1]))
table = pd.read_pickle(sys.argv[2])


class KillInEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 2 and batch == 1:  # the middle of the third epoch
            os.kill(os.getpid(), signal.SIGKILL)


callbacks = run._callbacks
run._callbacks = lambda *args: [*callbacks(*args), KillInEpoch()]
run.run_training(cfg, table=table)
"""


@pytest.mark.slow
def test_training_continues_after_kill_9(tmp_path):
    """kill -9 in epoch 3, the same command again: the run continues in its own folder from epoch 3
    and ends with the metrics of an uninterrupted run of the same seed."""
    cache, table = random_dataset(tmp_path / "cache", "expr", n_videos=5, n_val=2, seed=4, base_len=120)
    table.to_pickle(tmp_path / "table.pkl")
    settings = dict(
        cache_dir=str(tmp_path / "cache"),
        seq_len=16,
        epochs=6,
        patience=10,
        batch_size=8,
        layers=1,
        units=16,
        jit_compile="off",
        verbose=0,
        seed=3,
    )
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLED_RUN,
            repr({**settings, "runs_dir": str(tmp_path / "runs")}),
            str(tmp_path / "table.pkl"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    (half,) = (tmp_path / "runs").iterdir()
    assert (half / "backup").is_dir() and not (half / "metrics.json").exists()
    assert len((half / "history.csv").read_text().splitlines()) == 1 + 2  # epochs 1 and 2 logged

    resumed = run_training(TrainConfig(**settings, runs_dir=str(tmp_path / "runs")), table=table)
    assert resumed == half and len(list((tmp_path / "runs").iterdir())) == 1
    assert not (half / "backup").exists()
    history = (half / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == [str(e) for e in range(6)]

    whole = run_training(TrainConfig(**settings, runs_dir=str(tmp_path / "whole")), table=table)
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (resumed, whole))
    assert got["best_epoch"] == want["best_epoch"] and got["epochs_run"] == want["epochs_run"] == 6
    assert {k: got[k] for k in ("f1_macro", "accuracy")} == {k: want[k] for k in ("f1_macro", "accuracy")}
    # TensorFlow on CPU continues bit for bit: weights, optimizer, dropout seeds and batch order restored.
    assert (resumed / "predictions_validation.csv").read_bytes() == (whole / "predictions_validation.csv").read_bytes()


# 4. A source that changed after extraction is named, and re-extracted on request.
def test_changed_sources_are_named_and_refreshed(tmp_path, caplog):
    generate(tmp_path / "data", seed=2, n_clips=3, min_frames=20, max_frames=22, raw_videos=0)
    cfg = ExtractConfig(
        dataset="synthetic", data_root=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), workers=1
    )
    first = run_extract(cfg)
    cache = cache_path(cfg.cache_dir, "synthetic", "fer")
    sample = sorted(CacheReader(cache).video_ids())[0]
    before = CacheReader(cache).read(sample).embeddings
    frame = sorted((tmp_path / "data" / "cropped_aligned" / sample).glob("*.jpg"))[0]
    frame.write_bytes((tmp_path / "data" / "cropped_aligned" / sample / "00002.jpg").read_bytes())
    bytes_before = _digest(cache)

    again = run_extract(cfg)
    assert again["changed_sources"] == [sample] and again["done"] == 0
    assert "--refresh" in caplog.text and sample in caplog.text
    assert _digest(cache) == bytes_before  # kept until asked

    refreshed = run_extract(ExtractConfig(**{**cfg.__dict__, "refresh": True}))
    assert refreshed["refreshed"] and refreshed["done"] == 1
    after = CacheReader(cache).read(sample).embeddings
    assert not np.array_equal(after[0], before[0]) and np.array_equal(after[1:], before[1:])
    assert run_extract(cfg)["changed_sources"] == [] and first["done"] == len(CacheReader(cache).video_ids())


# 8. Messages that say what is wrong.
def test_a_png_named_jpg_is_read_and_garbage_is_not_called_truncated(tmp_path):
    import cv2

    from extract.sources import SourceError, iter_frame_folder

    image = np.zeros((20, 16, 3), np.uint8)
    image[:, :8] = 200
    cv2.imwrite(str(tmp_path / "00001.png"), image)
    (tmp_path / "00001.png").rename(tmp_path / "00001.jpg")
    ((_, rgb),) = list(iter_frame_folder(tmp_path))
    assert rgb.shape == (20, 16, 3) and rgb[0, 0, 0] == 200
    (tmp_path / "00001.jpg").write_bytes(b"GIF? no: plain text")
    with pytest.raises(SourceError, match=r"00001.jpg: not an image \(no JPEG or other image header\)"):
        list(iter_frame_folder(tmp_path))


def test_a_1x1_crop_is_a_frame_without_a_face_and_the_run_says_so(tmp_path, caplog):
    import cv2

    generate(tmp_path / "data", seed=5, n_clips=3, min_frames=20, max_frames=22, raw_videos=0)
    sample = sorted((tmp_path / "data" / "cropped_aligned").iterdir())[0]
    cv2.imwrite(str(sample / "00003.jpg"), np.full((1, 1, 3), 128, np.uint8))
    cfg = ExtractConfig(
        dataset="synthetic", data_root=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), workers=1
    )
    summary = run_extract(cfg)
    assert summary["failed"] == [] and summary["tiny_faces"] == [{"path": str(sample), "frames": [3]}]
    video = CacheReader(cache_path(cfg.cache_dir, "synthetic", "fer")).read(sample.name)
    assert not video.face_mask[video.frame_index == 3].any() and video.face_mask[video.frame_index == 2].all()
    assert not video.embeddings[video.frame_index == 3].any()  # the row is kept, zeroed like any face-less frame
    warned = [r.getMessage() for r in caplog.records if "under 8 pixels" in r.getMessage()]
    assert len(warned) == 1 and str(sample) in warned[0] and "(frames 3)" in warned[0]


def test_a_truncated_model_file_is_not_called_missing(tmp_path):
    from extract.backbones import load_backbone

    bad = tmp_path / "model.keras"
    bad.write_bytes(b"PK\x03\x04 cut here")
    with pytest.raises(ValueError, match=r"model.keras: not a .keras archive") as info:
        load_backbone(f"file:{bad}")
    assert "File not found" not in str(info.value)


# 7. A full disk is one line, keeps the finished videos, and a rerun continues.
def _tmpfs(folder: Path, options: str):
    """A real small file system (tmpfs) mounted on ``folder``, unmounted after the test."""
    folder.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.decode().strip()})")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    yield from _tmpfs(tmp_path / "disk", "size=8m")


@pytest.mark.slow
def test_a_full_disk_keeps_finished_videos_and_a_rerun_continues(tmp_path, small_disk, capsys):
    generate(tmp_path / "data", seed=6, n_clips=8, min_frames=40, max_frames=60, raw_videos=0)
    args = ["--data-root", str(tmp_path / "data"), "--cache-dir", str(small_disk / "cache"), "--workers", "1"]
    filler = small_disk / "filler"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler.write_bytes(b"\0" * (free - 4 * 2**20 - 200 * 2**10))  # room for the margin and a few videos
    code = extract_main(args)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and not ln.startswith("extract synthetic")]
    assert code == 2 and len(err) == 1 and "no space left for the cache" in err[0]
    assert "already finished are kept" in err[0] and "run the same command again" in err[0]
    parts = small_disk / "cache" / "synthetic" / "fer.parts"
    kept = sorted(p.name for p in parts.glob("*.h5")) if parts.is_dir() else []

    filler.unlink()
    assert extract_main(args) == 0
    out = capsys.readouterr().out
    expected = sorted(samples(load_dataset("synthetic", tmp_path / "data"))["sample_id"])
    assert CacheReader(cache_path(small_disk / "cache", "synthetic", "fer")).video_ids() == expected
    assert kept, "no video finished before the disk filled: the test's sizes need a look"
    assert f"{len(expected) - len(kept)} videos done, {len(kept)} already cached" in out


@pytest.fixture
def read_only_dir(tmp_path):
    yield from _tmpfs(tmp_path / "ro", "ro,size=1m")


@pytest.mark.slow
def test_read_only_output_folders_are_one_line(small_tree, read_only_dir, tmp_path, capsys):
    from evaluate.__main__ import main as evaluate_main

    root, cfg = small_tree
    assert extract_main(["--data-root", cfg.data_root, "--cache-dir", str(read_only_dir / "cache")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot create the cache's lock file (Read-only file system)" in err[0]

    code = train_main(
        [
            "--data-root",
            cfg.data_root,
            "--cache-dir",
            cfg.cache_dir,
            "--runs-dir",
            str(read_only_dir / "runs"),
            "--epochs",
            "1",
            "--seq-len",
            "8",
            "--verbose",
            "0",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "cannot create the run folder (Read-only file system)" in err[-1]

    (tmp_path / "runs").mkdir()
    code = evaluate_main(["report", "--runs-dir", str(tmp_path / "runs"), "--report-dir", str(read_only_dir / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "cannot write the report there (Read-only file system)" in err[-1]


def test_an_unreadable_label_file_is_a_dataset_error(tmp_path):
    from data_manifests.layouts.affwild2 import parse_label_file
    from data_manifests.schema import DatasetError

    folder_named_like_a_file = tmp_path / "video.txt"
    folder_named_like_a_file.mkdir()
    with pytest.raises(DatasetError, match=r"video.txt: cannot be read \(Is a directory\)"):
        parse_label_file(folder_named_like_a_file, "va")
