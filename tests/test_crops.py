"""SAVE_CROPS: stage one stores the face crops of raw videos, and fine-tuning reads them instead
of detecting again. Real videos (the synthetic generator's raw mp4s), a real cache, a real run."""

import json

import numpy as np
import pandas as pd
import pytest

from core.tasks import TASKS
from data_manifests.loader import load_dataset, samples
from data_manifests.synthetic import generate
from extract.__main__ import main as extract_main
from extract.backbones import crop_policy
from extract.cache import CacheError, CacheReader, cache_path
from extract.crops import CropStore, crops_path
from extract.faces import Detection, crop_face
from extract.pipeline import ExtractConfig, run_extract
from extract.sources import iter_video
from finetune.config import FinetuneConfig
from finetune.data import CropDataset, frame_index, saved_crops, split_rows
from finetune.run import load_indexes, run_finetune

pytestmark = pytest.mark.slow  # trains or extracts for seconds: `-m 'not slow'` skips it


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Four synthetic videos, every one also as a raw mp4; the crops of two runs."""
    root = tmp_path_factory.mktemp("crops")
    generate(root / "data", seed=5, n_clips=4, min_frames=30, max_frames=40, raw_videos=4)
    cfg = ExtractConfig(
        dataset="synthetic",
        data_root=str(root / "data"),
        cache_dir=str(root / "cache"),
        input="video",
        save_crops=True,
        workers=2,
        batch=64,
    )
    summary = run_extract(cfg)
    return root, summary


def _raw_table(root) -> pd.DataFrame:
    """The synthetic samples as a raw-video dataset sees them: no cropped_aligned folders."""
    table = load_dataset("synthetic", root / "data")
    table = table[table.media_path != ""].copy()
    table["frames_dir"] = ""
    return table


def test_every_face_of_the_cache_has_its_crop(raw):
    root, summary = raw
    cache = cache_path(root / "cache", "synthetic", "fer")
    assert summary["crops"] == str(crops_path(cache)) and summary["failed"] == []
    reader, store = CacheReader(cache), CropStore(crops_path(cache))
    assert store.video_ids() == reader.video_ids() and len(reader.video_ids()) >= 4
    assert store.meta.input_size == (112, 112, 3) and store.meta.detector == reader.meta.detector
    for video_id in reader.video_ids():
        feats = reader.read(video_id)
        np.testing.assert_array_equal(store.frames(video_id), feats.frame_index[feats.face_mask])
    # A stored crop is the crop of the cached box (JPEG quality 90: a few grey levels apart).
    video_id = reader.video_ids()[0]
    feats = reader.read(video_id)
    source = dict(
        iter_video(samples(load_dataset("synthetic", root / "data")).set_index("sample_id").loc[video_id, "media_path"])
    )
    for row in (0, len(store.frames(video_id)) - 1):
        frame = int(store.frames(video_id)[row])
        box = feats.bbox[feats.frame_index == frame][0]
        face = Detection(box, 1.0, np.zeros((6, 2), np.float32))
        expected = crop_face(source[frame], face, (112, 112), margin=crop_policy("fer").margin)
        assert np.abs(store.image(video_id, row).astype(int) - expected).mean() < 3


def test_a_cache_without_crops_gets_them_on_a_save_crops_run(raw, tmp_path):
    root, _ = raw
    args = dict(dataset="synthetic", data_root=str(root / "data"), cache_dir=str(tmp_path), input="video", workers=2)
    first = run_extract(ExtractConfig(**args))
    assert "crops" not in first and not crops_path(cache_path(tmp_path, "synthetic", "fer")).exists()
    again = run_extract(ExtractConfig(**args, save_crops=True))
    assert again["done"] == first["done"] and again["skipped_done"] == 0  # redone, now with crops
    store = CropStore(again["crops"])
    assert store.video_ids() == CacheReader(again["cache"]).video_ids()
    # Done means done: a third run has nothing to do (it skips every sample: one per subject).
    third = run_extract(ExtractConfig(**args, save_crops=True))
    assert third["done"] == 0 and third["skipped_done"] == len(store.video_ids())


def test_save_crops_refuses_frames_mode_and_other_sizes(raw, capsys):
    root, _ = raw
    base = [
        "--dataset",
        "synthetic",
        "--data-root",
        str(root / "data"),
        "--cache-dir",
        str(root / "cache"),
        "--workers",
        "1",
        "--save-crops",
    ]
    assert extract_main(base) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --save-crops stores the crops cut from videos, but synthetic is read in 'frames' mode, whose "
        "cropped_aligned frames fine-tuning reads directly; add --input video (INPUT=video) to save crops "
        "from the videos"
    )
    assert extract_main([*base, "--input", "video", "--crop-size", "64"]) == 2
    err = capsys.readouterr().err.strip()
    crops = crops_path(cache_path(root / "cache", "synthetic", "fer"))
    assert err.startswith(f"error: {crops}: was written with other settings (input_size: (112, 112, 3) != (64, 64, 3))")
    with pytest.raises(CacheError, match="a feature cache, not a crops file"):
        CropStore(cache_path(root / "cache", "synthetic", "fer"))


def test_finetuning_reads_the_saved_crops(raw):
    root, _ = raw
    table = _raw_table(root)
    cfg = FinetuneConfig(
        dataset="synthetic",
        data_root=str(root / "data"),
        cache_dir=str(root / "cache"),
        warmup_epochs=1,
        epochs=0,
        batch_size=32,
        train_frames=64,
        val_frames=64,
        verbose=0,
        runs_dir=str(root / "runs"),
        run_name="from-crops",
    )
    train_rows, val_rows, _ = split_rows(cfg, table)
    rows = pd.concat([train_rows, val_rows])
    store = saved_crops(cfg, rows)
    assert store.path == crops_path(cache_path(root / "cache", "synthetic", "fer"))
    index = frame_index(rows, TASKS["expr"], store)
    assert all(p.startswith("saved:") for p in index.paths)
    # Only annotated frames with a face.
    for sample in rows.itertuples():
        mine = index.frame_index[index.sample_ids == sample.sample_id]
        labelled = set(np.asarray(sample.frame_index)[np.asarray(sample.valid, bool)].tolist())
        assert set(mine.tolist()) <= set(store.frames(sample.sample_id).tolist()) & labelled
    x, y = CropDataset(index, (64, 64, 1), batch_size=8)[0]
    assert x.shape == (8, 64, 64, 1) and y.shape == (8, 2) and x.max() > 0
    train, val, _, info = load_indexes(cfg, TASKS["expr"], table)
    assert info["crops"] == str(store.path) and len(train) > 0 and len(val) > 0
    run = run_finetune(cfg, table)
    assert json.loads((run / "config.json").read_text())["data"]["crops"] == str(store.path)
    assert (run / "model.keras").is_file()


def test_raw_samples_without_crops_say_how_to_get_them(raw, tmp_path):
    root, _ = raw
    cfg = FinetuneConfig(dataset="synthetic", data_root=str(root / "data"), cache_dir=str(tmp_path))
    table = _raw_table(root)
    with pytest.raises(ValueError) as err:
        saved_crops(cfg, table)
    first = table.sample_id.iloc[0]
    assert str(err.value) == (
        f"sample '{first}' has no cropped_aligned folder and {tmp_path / 'synthetic'} holds no crops file; store its "
        f"face crops once with make extract DATASET=synthetic INPUT=video SAVE_CROPS=1 (CACHE_DIR={tmp_path}), "
        f"or pass --crops <file>"
    )
    for name in ("a.crops.h5", "b.crops.h5"):
        (tmp_path / "synthetic").mkdir(exist_ok=True)
        (tmp_path / "synthetic" / name).write_bytes(b"")
    with pytest.raises(ValueError, match=r"several crops files \(a.crops.h5, b.crops.h5\); pass --crops <file>"):
        saved_crops(cfg, table)
