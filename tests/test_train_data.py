"""train.data: joining labels by frame number, masks, windows, batches, splits, prediction tiling."""

import logging

import keras
import numpy as np
import pytest

from core.tasks import TASKS
from extract.cache import CacheReader
from tests.train_helpers import random_dataset, row, table, write_cache
from train.data import choose_splits, join_by_frame, load_split, predictions_table
from train.windows import WindowDataset, predict_split, tiling_windows, train_windows


def test_join_by_frame_matches_numbers_not_positions():
    cache_frames = np.array([3, 4, 5, 6, 7, 9])  # frame 8 was never decoded
    label_frames = np.array([10, 1, 2, 3, 4, 5, 6, 7, 8])  # unsorted, starts before the cache
    labels = (label_frames * 10).astype(np.float32)[:, None]
    valid = label_frames != 5
    out, ok, unmatched = join_by_frame(cache_frames, label_frames, labels, valid, -1.0, "v")
    np.testing.assert_array_equal(out[:, 0], [30, 40, 50, 60, 70, -1])
    np.testing.assert_array_equal(ok, [True, True, False, True, True, False])
    assert unmatched == 4  # frames 1, 2, 8, 10 have labels but no cache row


def test_join_refuses_duplicate_frames():
    with pytest.raises(ValueError, match="v7: frame 4 is labelled twice"):
        join_by_frame(np.array([1, 2]), np.array([4, 4]), np.zeros((2, 1), np.float32), np.ones(2, bool), 0, "v7")


def test_load_split_joins_offset_labels_and_masks(tmp_path):
    dim = 6
    frames = np.arange(11, 31)  # cache rows are frames 11..30
    face = np.ones(20, bool)
    face[[2, 3]] = False
    emb = np.arange(20 * dim, dtype=np.float32).reshape(20, dim) / 100 * face[:, None]
    path = write_cache(tmp_path, {"a": (emb, frames, face)}, dim)
    label_frames = np.arange(1, 41)  # labels for frames 1..40, value = frame number
    va = np.stack([label_frames / 100, -label_frames / 100], axis=1).astype(np.float32)
    valid = np.ones(40, bool)
    valid[14] = False  # frame 15
    rows = table([row("a", "va", "train", va, valid, label_frames)])
    split, info = load_split(CacheReader(path), rows, TASKS["va"])
    assert split.n_frames == 20 and split.x.shape == (21, dim) and split.x.dtype == np.float16
    np.testing.assert_allclose(split.labels[:, 0], frames / 100, rtol=1e-6)
    np.testing.assert_array_equal(split.frame_index, frames)
    assert not split.valid[4] and split.valid.sum() == 19
    assert split.eligible.sum() == 17  # two frames without a face, one unlabelled
    tgt = split.targets()
    assert tgt.shape == (21, 3)
    np.testing.assert_array_equal(tgt[:-1, 2], split.eligible.astype(np.float32))
    assert tgt[4, 0] == 0.0  # an invalid label never reaches a loss as its marker value
    np.testing.assert_array_equal(tgt[-1], [0, 0, 0])  # padding row
    assert info["labelled_frames_not_in_cache"] == 20 and info["faces"] == 18


def test_missing_samples_are_skipped_or_refused(tmp_path, caplog):
    path, tab = random_dataset(tmp_path, "expr", n_videos=2, n_val=0)
    extra = table([row("ghost", "expr", "train", np.zeros(3, int), np.ones(3, bool), [1, 2, 3])])
    rows = table(list(tab.to_dict("records")) + list(extra.to_dict("records")))
    with caplog.at_level(logging.WARNING):
        split, info = load_split(CacheReader(path), rows, TASKS["expr"])
    assert split.sample_ids == ["v0", "v1"] and info["samples_missing_in_cache"] == 1
    assert "1 of 3 samples are not in the cache" in caplog.text
    with pytest.raises(ValueError, match="none of the 1 samples .* run `make extract`"):
        load_split(CacheReader(path), extra, TASKS["expr"])


def test_bad_labels_name_the_sample(tmp_path):
    path, _ = random_dataset(tmp_path, "expr", n_videos=1, n_val=0)
    n = 60
    bad = table([row("v0", "expr", "train", np.full(n, 9), np.ones(n, bool), np.arange(1, n + 1))])
    with pytest.raises(ValueError, match=r"fer.h5:v0: class id 9.0 outside 0..7"):
        load_split(CacheReader(path), bad, TASKS["expr"])
    va = table([row("v0", "va", "train", np.full((n, 2), 1.5, np.float32), np.ones(n, bool), np.arange(1, n + 1))])
    with pytest.raises(ValueError, match=r"v0: task 'va' labels must lie in \[-1.0, 1.0\]"):
        load_split(CacheReader(path), va, TASKS["va"])


def _split(tmp_path, task="expr", **kw):
    path, tab = random_dataset(tmp_path, task, **kw)
    return load_split(CacheReader(path), tab, TASKS[task])[0]


def test_train_windows_cover_the_end_and_skip_empty_windows(tmp_path):
    split = _split(tmp_path, n_videos=3, n_val=0, base_len=10)  # lengths 10, 23, 36
    sample, start = train_windows(split, seq_len=4, stride=3)
    assert start[sample == 0].tolist() == [0, 3, 6]
    assert start[sample == 1].tolist() == [0, 3, 6, 9, 12, 15, 18, 19]
    last = split.offsets[2] + 35
    split.keep[:] = False
    split.keep[last] = split.valid[last] = split.face[last] = True  # one frame counts: only its windows survive
    sample, start = train_windows(split, seq_len=4, stride=3)
    assert sample.tolist() == [2] and start.tolist() == [32]


def test_short_video_window_is_padded(tmp_path):
    split = _split(tmp_path, n_videos=1, n_val=0, base_len=5)
    sample, start = train_windows(split, seq_len=8, stride=4)
    assert start.tolist() == [0]
    x, y = WindowDataset(split, sample, start, 8, 4)[0]
    assert x["embeddings"].shape == (1, 8, 8) and x["embeddings"].dtype == np.float32
    assert x["face"][0, 5:].tolist() == [0, 0, 0] and y[0, 5:, -1].tolist() == [0, 0, 0]
    np.testing.assert_array_equal(x["embeddings"][0, 5:], 0)
    np.testing.assert_array_equal(x["embeddings"][0, :5], split.x[:5].astype(np.float32))


def test_batches_shapes_and_seeded_shuffle(tmp_path):
    split = _split(tmp_path, n_videos=4, n_val=0)
    sample, start = train_windows(split, 16, 8)
    ds = WindowDataset(split, sample, start, 16, 5, shuffle_seed=3)
    x, y = ds[0]
    assert x["embeddings"].shape == (5, 16, 8) and x["face"].shape == (5, 16) and y.shape == (5, 16, 2)
    assert len(ds) == -(-len(sample) // 5)
    assert ds[len(ds) - 1][1].shape[0] == len(sample) - 5 * (len(ds) - 1)
    again = WindowDataset(split, sample, start, 16, 5, shuffle_seed=3)
    other = WindowDataset(split, sample, start, 16, 5, shuffle_seed=4)
    np.testing.assert_array_equal(again[0][1], y)
    assert not np.array_equal(other._order, ds._order)
    first = ds._order.copy()
    ds.on_epoch_end()
    assert not np.array_equal(first, ds._order) and sorted(ds._order) == list(range(len(sample)))
    # Each target row is the label at that window position.
    w = first[0]
    rows = split.offsets[sample[w]] + start[w] + np.arange(16)
    np.testing.assert_array_equal(y[0, :, 0], np.where(split.valid[rows], split.labels[rows, 0], 0))
    np.testing.assert_array_equal(y[0, :, 1], split.eligible[rows])


def test_clip_windows_carry_the_clip_label(tmp_path):
    split = _split(tmp_path, "clip", n_videos=3, n_val=0)
    split.face[split.offsets[0] : split.offsets[0] + 16] = False
    sample, start = train_windows(split, 16, 16)
    assert not np.any((sample == 0) & (start == 0))  # a window without a face says nothing
    x, y = WindowDataset(split, sample, start, 16, 64)[0]
    assert y.shape == (len(sample), 2)
    np.testing.assert_array_equal(y[:, 0], split.labels[sample, 0])
    assert (y[:, 1] == 1).all()


def test_tiling_owns_each_frame_once():
    sample, start, own = tiling_windows(np.array([10, 4, 8, 0]), 4)
    assert list(zip(sample.tolist(), start.tolist(), own.tolist())) == [
        (0, 0, 0),
        (0, 4, 0),
        (0, 6, 2),
        (1, 0, 0),
        (2, 0, 0),
        (2, 4, 0),
        (3, 0, 0),
    ]


def _position_model(dim):
    # Output = the embedding itself: each frame's prediction shows which input row produced it.
    emb = keras.Input((None, dim), name="embeddings")
    face = keras.Input((None,), name="face")
    return keras.Model({"embeddings": emb, "face": face}, keras.layers.Identity()(emb))


def test_validation_predictions_tile_every_frame(tmp_path):
    dim, lengths = 3, [37, 5, 64]
    videos = {}
    for i, t in enumerate(lengths):
        frames = np.arange(100 * i + 1, 100 * i + 1 + t)
        emb = np.stack([frames / 1000, np.full(t, i), np.zeros(t)], axis=1)
        videos[f"v{i}"] = (emb, frames, np.ones(t, bool))
    path = write_cache(tmp_path, videos, dim)
    rows = table(
        [
            row(
                f"v{i}",
                "va",
                "validation",
                np.zeros((t, 2), np.float32),
                np.ones(t, bool),
                np.arange(100 * i + 1, 100 * i + 1 + t),
            )
            for i, t in enumerate(lengths)
        ]
    )
    split, _ = load_split(CacheReader(path), rows, TASKS["va"])
    pred = predict_split(_position_model(dim), split, seq_len=16, batch_size=4)
    assert pred.shape == (sum(lengths), 3)
    np.testing.assert_allclose(pred[:, 0], split.frame_index / 1000, rtol=1e-3)
    tab = predictions_table(split, pred[:, :2])
    assert list(tab.columns) == [
        "sample_id",
        "frame_index",
        "face",
        "valid",
        "true_valence",
        "true_arousal",
        "pred_valence",
        "pred_arousal",
    ]
    assert len(tab) == 106 and tab.groupby("sample_id").size().to_dict() == {"v0": 37, "v1": 5, "v2": 64}
    assert not tab.duplicated(["sample_id", "frame_index"]).any()


def test_official_and_subject_independent_splits():
    rows = table(
        [row(f"v{i}", "expr", "train", [], [], [], subject=f"s{i % 4}") for i in range(12)]
        + [row("w", "expr", "validation", [], [], [])]
    )
    train, val, how = choose_splits(rows, seed=0, val_fraction=0.25)
    assert how == "official" and val["sample_id"].tolist() == ["w"] and len(train) == 12
    no_val = rows[rows["split"] == "train"]
    train, val, how = choose_splits(no_val, seed=0, val_fraction=0.25)
    assert how.startswith("subject-independent")
    assert set(train["subject"]).isdisjoint(val["subject"]) and len(train) + len(val) == 12
    assert val["sample_id"].tolist() == choose_splits(no_val, 0, 0.25)[1]["sample_id"].tolist()
    picks = {tuple(sorted(set(choose_splits(no_val, s, 0.25)[1]["subject"]))) for s in range(6)}
    assert len(picks) > 1
    one = no_val.assign(subject="same")
    one = one.assign(video="same")
    with pytest.raises(ValueError, match="only one subject"):
        choose_splits(one, 0, 0.25)
