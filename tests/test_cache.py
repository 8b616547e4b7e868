"""The HDF5 cache: round trip, crash safety of shards and merges, and what the reader refuses."""

import dataclasses

import h5py
import numpy as np
import pytest

from extract.cache import (
    FORMAT_VERSION,
    CacheError,
    CacheMeta,
    CacheReader,
    VideoWriter,
    cache_path,
    finished_shards,
    merge_shards,
    parts_dir_for,
)

META = CacheMeta(
    backbone="fer",
    embedding_dim=8,
    input_size=(64, 64, 1),
    preprocessing="x/127.5-1",
    weights_sha256="ab" * 32,
    keras_version="3.15.1",
    backend="tensorflow",
)


def _rows(t, dim=8, start=1, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.random(t) > 0.3
    emb = rng.normal(size=(t, dim)).astype(np.float32) * mask[:, None]
    bbox = rng.uniform(0, 100, size=(t, 4)).astype(np.float32) * mask[:, None]
    score = rng.uniform(0.5, 1, size=t).astype(np.float32) * mask
    return emb, np.arange(start, start + t, dtype=np.int32), mask, bbox, score


def _write(parts, vid, t, chunks=3, seed=0):
    emb, idx, mask, bbox, score = _rows(t, seed=seed)
    with VideoWriter(parts, vid, META, source=f"{vid}.mp4") as w:
        for part in np.array_split(np.arange(t), chunks):
            w.append(emb[part], idx[part], mask[part], bbox[part], score[part])
    return emb, idx, mask, bbox, score


def test_round_trip_three_videos(tmp_path):
    path = cache_path(tmp_path, "synthetic", "fer")
    assert path == tmp_path / "synthetic" / "fer.h5"
    parts = parts_dir_for(path)
    written = {vid: _write(parts, vid, t, seed=i) for i, (vid, t) in enumerate([("a", 300), ("b_left", 7), ("c", 1)])}
    assert sorted(merge_shards(path, parts, META)) == ["a", "b_left", "c"]
    assert finished_shards(parts) == []

    reader = CacheReader(path)
    assert reader.meta == META
    assert reader.video_ids() == ["a", "b_left", "c"]
    for vid, (emb, idx, mask, bbox, score) in written.items():
        got = reader.read(vid)
        assert got.embeddings.dtype == np.float16 and got.embeddings.shape == (len(idx), 8)
        np.testing.assert_array_equal(got.embeddings, emb.astype(np.float16))
        np.testing.assert_array_equal(got.frame_index, idx)
        assert got.frame_index.dtype == np.int32 and got.face_mask.dtype == np.bool_
        np.testing.assert_array_equal(got.face_mask, mask)
        np.testing.assert_array_equal(got.bbox, bbox)
        np.testing.assert_array_equal(got.score, score)
    info = reader.info()
    assert info["videos"] == 3 and info["frames"] == 308
    assert info["faces"] == sum(int(w[2].sum()) for w in written.values())

    with h5py.File(path, "r") as f:
        dset = f["videos/a/embeddings"]
        assert dset.chunks[0] == 256 and dset.compression == "lzf"
        assert f.attrs["format_version"] == FORMAT_VERSION
        assert f["videos/a"].attrs["complete"] and f["videos/a"].attrs["n_frames"] == 300


def test_second_merge_adds_without_touching_earlier_videos(tmp_path):
    path = tmp_path / "x.h5"
    parts = parts_dir_for(path)
    emb_a = _write(parts, "a", 20)[0]
    merge_shards(path, parts, META)
    _write(parts, "b", 5, seed=3)
    assert merge_shards(path, parts, META) == ["b"]
    reader = CacheReader(path)
    assert reader.video_ids() == ["a", "b"]
    np.testing.assert_array_equal(reader.read("a").embeddings, emb_a.astype(np.float16))


def test_killed_writer_leaves_no_video(tmp_path):
    path = tmp_path / "x.h5"
    parts = parts_dir_for(path)
    _write(parts, "done", 10)
    w = VideoWriter(parts, "killed", META)
    w.append(*_rows(4))
    # Simulate a kill: the shard is never closed, so it keeps its .partial name.
    w._file.flush()
    assert [p.name for p in finished_shards(parts)] == ["done.h5"]
    w._file.close()
    assert merge_shards(path, parts, META) == ["done"]
    assert CacheReader(path).video_ids() == ["done"]
    assert not list(parts.glob("*.partial"))


def test_failed_video_is_aborted(tmp_path):
    parts = tmp_path / "p"
    with pytest.raises(RuntimeError):
        with VideoWriter(parts, "bad", META) as w:
            w.append(*_rows(3))
            raise RuntimeError("decoder died")
    assert list(parts.iterdir()) == []


def test_append_checks_shapes(tmp_path):
    emb, idx, mask, bbox, score = _rows(3)
    with pytest.raises(CacheError, match=r"embeddings of shape \(5,\), expected \(8,\)"):
        with VideoWriter(tmp_path, "v", META) as w:
            w.append(np.zeros((3, 5)), idx, mask, bbox, score)
    with pytest.raises(CacheError, match="'face_mask' has 2 rows, frame_index has 3"):
        with VideoWriter(tmp_path, "v", META) as w:
            w.append(emb, idx, mask[:2], bbox, score)


def test_reader_refuses_incomplete_video(tmp_path):
    path = tmp_path / "x.h5"
    parts = parts_dir_for(path)
    _write(parts, "a", 4)
    merge_shards(path, parts, META)
    with h5py.File(path, "a") as f:
        f["videos/a"].attrs["complete"] = False
    reader = CacheReader(path)
    assert reader.video_ids() == []
    assert reader.video_ids(complete_only=False) == ["a"]
    with pytest.raises(CacheError, match=r"x\.h5: video 'a' is incomplete .* run `make extract` again"):
        reader.read("a")
    with pytest.raises(CacheError, match="no video 'zz'"):
        reader.read("zz")


def test_reader_refuses_wrong_version(tmp_path):
    path = tmp_path / "x.h5"
    merge_shards(path, parts_dir_for(path), META)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(
        CacheError,
        match=f"x.h5: cache format version {FORMAT_VERSION + 1}, this code reads "
        f"version {FORMAT_VERSION}; delete the file",
    ):
        CacheReader(path)


def test_reader_refuses_non_hdf5_and_missing(tmp_path):
    bad = tmp_path / "fer.h5"
    bad.write_text("not hdf5")
    with pytest.raises(CacheError, match=r"fer\.h5: not an HDF5 file; delete it"):
        CacheReader(bad)
    with pytest.raises(CacheError, match=r"nope\.h5: no such cache file; run `make extract` first"):
        CacheReader(tmp_path / "nope.h5")


def test_merge_refuses_other_settings_and_keeps_shards(tmp_path):
    path = tmp_path / "x.h5"
    parts = parts_dir_for(path)
    _write(parts, "a", 4)
    merge_shards(path, parts, META)
    _write(parts, "b", 4)
    other = CacheMeta(backbone="fer", embedding_dim=8, input_size=(48, 48, 1))
    with pytest.raises(CacheError, match="was written with other settings .*input_size"):
        merge_shards(path, parts, other)
    assert [p.name for p in finished_shards(parts)] == ["b.h5"]
    assert CacheReader(path).video_ids() == ["a"]


def test_file_backbone_cache_name(tmp_path):
    assert cache_path("cache", "affwild2", "file:runs/ft1/model.keras").name == "file-ft1-model.h5"
    assert cache_path("cache", "affwild2", "file:model.keras").name == "file-model.h5"


def test_a_run_with_nothing_to_merge_still_refuses_other_settings(tmp_path):
    path = tmp_path / "x.h5"
    parts = parts_dir_for(path)
    _write(parts, "a", 4)
    merge_shards(path, parts, META)
    other = dataclasses.replace(META, weights_sha256="cd" * 32)
    with pytest.raises(CacheError, match=r"x\.h5: was written with other settings \(weights_sha256: "):
        merge_shards(path, parts, other)
