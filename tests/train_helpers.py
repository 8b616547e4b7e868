"""Tiny real HDF5 caches and label tables for the train tests (built in tmp_path, no dataset files)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from data_manifests.schema import COLUMNS
from extract.cache import CacheMeta, VideoWriter, cache_path, merge_shards, parts_dir_for

# The smallest training run that still learns the tests' signals: seconds on 2 cores.
TINY = dict(seq_len=16, stride=8, epochs=2, batch_size=8, layers=1, units=8, jit_compile="off", verbose=0)


def write_cache(root, videos: dict, dim: int, dataset: str = "synthetic", backbone: str = "fer"):
    """``videos``: id -> (embeddings [T, D], frame_index [T], face_mask [T]); returns the cache path."""
    meta = CacheMeta(backbone=backbone, embedding_dim=dim, input_size=(64, 64, 1))
    path = cache_path(root, dataset, backbone)
    parts = parts_dir_for(path)
    for vid, (emb, frames, face) in videos.items():
        t = len(frames)
        with VideoWriter(parts, vid, meta) as w:
            w.append(emb, frames, face, np.zeros((t, 4)), np.asarray(face, np.float32))
    merge_shards(path, parts, meta)
    return path


def row(sample_id, task, split, labels, valid, frame_index=None, subject=None) -> dict:
    return {
        "sample_id": sample_id,
        "video": sample_id,
        "subject": subject or f"subj_{sample_id}",
        "side": "",
        "split": split,
        "task": task,
        "media_path": "",
        "frames_dir": "",
        "frame_index": None if frame_index is None else np.asarray(frame_index, np.int32),
        "labels": labels,
        "valid": valid,
    }


def table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(COLUMNS))


def random_dataset(
    root,
    task: str,
    n_videos: int = 5,
    n_val: int = 2,
    dim: int = 8,
    seed: int = 0,
    base_len: int = 60,
    label_offset: int = 0,
):
    """Random embeddings and labels for ``task``; the last ``n_val`` videos are the validation split.

    Cache frames start at 1 + 3*i; label rows cover the cache frames shifted by ``label_offset``
    (labels of frames outside the cache exist too). Returns ``(cache_path, table)``.
    """
    rng = np.random.default_rng(seed)
    videos, rows = {}, []
    for i in range(n_videos):
        t = base_len + 13 * i
        frames = np.arange(1 + 3 * i, 1 + 3 * i + t)
        face = rng.random(t) > 0.15
        emb = rng.normal(size=(t, dim)) * face[:, None]
        videos[f"v{i}"] = (emb, frames, face)
        split = "validation" if i >= n_videos - n_val else "train"
        lab_frames = frames + label_offset
        n = len(lab_frames)
        if task == "va":
            labels = np.clip(rng.normal(0, 0.4, (n, 2)), -1, 1).astype(np.float32)
        elif task == "expr":
            labels = rng.integers(0, 8, n)
        elif task == "au":
            labels = (rng.random((n, 12)) < 0.3).astype(np.float32)
        if task in ("va", "expr", "au"):
            valid = rng.random(n) > 0.1
            rows.append(row(f"v{i}", task, split, labels, valid, lab_frames))
        elif task == "eri":
            rows.append(row(f"v{i}", task, split, rng.random(7).astype(np.float32), True))
        else:
            rows.append(row(f"v{i}", task, split, int(rng.integers(0, 7)), True))
    return write_cache(root, videos, dim), table(rows)


def context_dataset(
    root,
    seed: int = 1,
    n_videos: int = 8,
    n_val: int = 2,
    length: int = 300,
    dim: int = 8,
    classes: int = 4,
    amplitude: float = 0.9,
):
    """The class is visible only in the mean over several frames: segments of 8-23 frames, each of
    one class, whose embeddings are ``amplitude * prototype[class]`` plus unit Gaussian noise."""
    rng = np.random.default_rng(seed)
    proto = rng.normal(size=(classes, dim))
    proto /= np.linalg.norm(proto, axis=1, keepdims=True)
    videos, rows = {}, []
    for i in range(n_videos):
        cls: list[int] = []
        while len(cls) < length:
            cls += [int(rng.integers(0, classes))] * int(rng.integers(8, 24))
        cls_arr = np.array(cls[:length])
        frames = np.arange(1, length + 1)
        videos[f"v{i}"] = (amplitude * proto[cls_arr] + rng.normal(size=(length, dim)), frames, np.ones(length, bool))
        split = "validation" if i >= n_videos - n_val else "train"
        rows.append(row(f"v{i}", "expr", split, cls_arr, np.ones(length, bool), frames))
    return write_cache(root, videos, dim), table(rows)


def tiny_crop_table(tmp_path) -> pd.DataFrame:
    """One expr sample of 6 frames with uniform-grey crops (value 40 x frame number); frame 4 has
    no crop (no face), frame 2 is unannotated (-1)."""
    import cv2

    folder = tmp_path / "cropped_aligned" / "v1"
    folder.mkdir(parents=True)
    for n in (1, 2, 3, 5, 6):
        cv2.imwrite(str(folder / f"{n:05d}.jpg"), np.full((20, 16, 3), 40 * n, np.uint8))
    labels = np.array([0, -1, 3, 2, 7, 1], np.float32)
    return pd.DataFrame(
        [
            {
                "sample_id": "v1",
                "frames_dir": str(folder),
                "frame_index": np.arange(1, 7),
                "labels": labels,
                "valid": labels >= 0,
                "split": "train",
                "task": "expr",
            }
        ]
    )
