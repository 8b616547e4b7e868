"""The HDF5 cache alone: writing rows as stage one does, reading videos and random windows.

Writes go through :class:`extract.cache.VideoWriter` in the pipeline's message size (64 rows per
append) and end with :func:`extract.cache.merge_shards`, as a run does. Reads go through
:class:`extract.cache.CacheReader` (whole videos, what ``train.data.load_split`` reads) and, for
random windows, through h5py slices of the same file (what a lazy, from-disk data path would
read). The file was just written, so reads come from the page cache: a cold disk is slower.

Example::

    path = write_cache(Path("bench-work/bench.h5"), videos=8, frames=2048, dim=128)["path"]
    read_rates(path, seq_len=64, min_seconds=1.0)["hdf5_read_windows_s"]
    # 5123.0
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import h5py
import numpy as np

from extract.cache import CacheMeta, CacheReader, VideoWriter, merge_shards, parts_dir_for

log = logging.getLogger(__name__)

ROWS_PER_APPEND = 64  # extract.pipeline.ExtractConfig.chunk: what one worker message carries


def video_ids(videos: int) -> list[str]:
    return [f"bench{i:03d}" for i in range(videos)]


def write_cache(path: Path, videos: int, frames: int, dim: int, seed: int = 0) -> dict:
    """Writes ``videos`` x ``frames`` rows of random float16 embeddings (every frame with a face).

    Returns:
        ``hdf5_write_frames_s`` (frames over append + close + merge) and the cache ``path``.
    """
    rng = np.random.default_rng(seed)
    meta = CacheMeta(backbone="bench", embedding_dim=dim, input_size=(1, 1, 1), detector="bench: random rows")
    emb = [rng.normal(size=(frames, dim)).astype(np.float16) for _ in range(videos)]
    bbox = np.tile(np.array([10, 10, 110, 110], np.float32), (frames, 1))
    parts = parts_dir_for(path)
    start = time.perf_counter()
    for video, rows in zip(video_ids(videos), emb):
        with VideoWriter(parts, video, meta, source="bench") as writer:
            for s in range(0, frames, ROWS_PER_APPEND):
                e = min(s + ROWS_PER_APPEND, frames)
                writer.append(
                    rows[s:e], np.arange(s + 1, e + 1), np.ones(e - s, bool), bbox[s:e], np.ones(e - s, np.float32)
                )
    merge_shards(path, parts, meta)
    seconds = time.perf_counter() - start
    rate = videos * frames / seconds
    log.info("hdf5_write_frames_s: %d x %d rows of D=%d: %.0f frames/s", videos, frames, dim, rate)
    return {"hdf5_write_frames_s": round(rate, 1), "path": path}


def read_rates(path: Path, seq_len: int, min_seconds: float, seed: int = 0) -> dict:
    """Whole videos through ``CacheReader.read`` (frames/s) and random ``seq_len`` windows (windows/s)."""
    reader = CacheReader(path)
    ids = reader.video_ids()
    start = time.perf_counter()
    frames = sum(len(reader.read(v, fields=("embeddings", "frame_index", "face_mask"))) for v in ids)
    whole = frames / (time.perf_counter() - start)
    rng = np.random.default_rng(seed)
    windows = 0
    with h5py.File(reader.path, "r") as f:
        groups = [f["videos"][v] for v in ids]
        lengths = [g["frame_index"].shape[0] for g in groups]
        start = time.perf_counter()
        while windows < 10 or time.perf_counter() - start < min_seconds:
            k = int(rng.integers(len(groups)))
            s = int(rng.integers(max(lengths[k] - seq_len, 0) + 1))
            group = groups[k]
            group["embeddings"][s : s + seq_len]
            group["face_mask"][s : s + seq_len]
            windows += 1
        seconds = time.perf_counter() - start
    log.info(
        "hdf5 read: whole videos %.0f frames/s; random %d-frame windows %.0f windows/s",
        whole,
        seq_len,
        windows / seconds,
    )
    return {"hdf5_read_frames_s": round(whole, 1), "hdf5_read_windows_s": round(windows / seconds, 1)}
