"""Cached embeddings + labels -> in-RAM arrays -> windows -> batches.

Each sample's cached rows are read once and concatenated into one float16 array per split, with a
zero row at the end that padding positions point to. Labels are joined to cache rows by *frame
number* (cache ``frame_index`` against the label table's ``frame_index``), never by position.

Windows are ``(sample, start)`` pairs cut in memory; a batch is one fancy-index gather, so the
data path costs microseconds per window on any backend (:class:`WindowDataset` is a
``keras.utils.PyDataset``, no tf.data).

Targets are ``[..., C + 1]``: labels (invalid ones replaced by 0 so no loss sees a marker value)
and the loss mask = annotated AND face found AND kept by rebalancing AND not padding.

Example::

    reader = CacheReader(cache_path("cache", "synthetic", "fer"))
    split = load_split(reader, rows[rows.split == "train"], TASKS["expr"])
    sample, start = train_windows(split, seq_len=64, stride=32)
    ds = WindowDataset(split, sample, start, seq_len=64, batch_size=32, shuffle_seed=0)
    x, y = ds[0]; x["embeddings"].shape, x["face"].shape, y.shape
    # ((32, 64, 128), (32, 64), (32, 64, 2))
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from core.tasks import TaskSpec
from extract.cache import CacheReader

log = logging.getLogger(__name__)


@dataclass
class SplitData:
    """One split of one task, every sample's frames concatenated (row ``n_frames`` is padding).

    Attributes:
        sample_ids: cache group names, in row order. offsets: ``[S + 1]`` first row of each sample.
        x: float16 ``[N + 1, D]``. face: bool ``[N + 1]``. frame_index: int32 ``[N]``.
        labels: float32 ``[N, C]`` (frame tasks) or ``[S, C]`` (clip tasks), invalid markers kept.
        valid: bool, same length as ``labels``: the label is annotated (and, for frames, present).
        keep: bool like ``valid``: kept by rebalancing (all True outside the training split).
    """

    task: TaskSpec
    sample_ids: list[str]
    offsets: np.ndarray
    x: np.ndarray
    face: np.ndarray
    frame_index: np.ndarray
    labels: np.ndarray
    valid: np.ndarray
    keep: np.ndarray

    @property
    def n_frames(self) -> int:
        return int(self.offsets[-1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def eligible(self) -> np.ndarray:
        """Units that may count: annotated and (frame tasks) with a face."""
        if self.task.level == "clip":
            return self.valid.copy()
        return self.valid & self.face[: self.n_frames]

    def targets(self) -> np.ndarray:
        """``[units (+1 pad row for frames), C + 1]``: sanitised labels and the loss mask."""
        mask = self.eligible & self.keep
        labels = np.where(self.valid[:, None], self.labels, 0.0)
        out = np.concatenate([labels, mask[:, None]], axis=1).astype(np.float32)
        if self.task.level == "frame":
            out = np.concatenate([out, np.zeros((1, out.shape[1]), np.float32)])
        return out


def join_by_frame(
    cache_frames: np.ndarray, label_frames: np.ndarray, labels: np.ndarray, valid: np.ndarray, fill: float, where: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Labels for each cache row, matched on frame number.

    Args:
        cache_frames: int ``[T]`` frame numbers of the cache rows.
        label_frames: int ``[N]`` frame numbers of the labels; labels: ``[N, C]``; valid: bool ``[N]``.
        fill: label value for cache rows that have no label row (they get ``valid=False``).
        where: names the sample in errors.

    Returns:
        ``(labels [T, C], valid [T], n_unmatched)``; ``n_unmatched`` counts label frames that
        are not in the cache (they cannot be scored).
    """
    label_frames = np.asarray(label_frames, np.int64)
    order = np.argsort(label_frames, kind="stable")
    sorted_frames = label_frames[order]
    dup = sorted_frames[1:] == sorted_frames[:-1]
    if dup.any():
        raise ValueError(f"{where}: frame {int(sorted_frames[1:][dup][0])} is labelled twice")
    pos = np.searchsorted(sorted_frames, cache_frames)
    pos_c = np.minimum(pos, max(len(sorted_frames) - 1, 0))
    hit = (
        (pos < len(sorted_frames)) & (sorted_frames[pos_c] == cache_frames)
        if len(sorted_frames)
        else np.zeros(len(cache_frames), bool)
    )
    src = order[pos_c]
    out = np.full((len(cache_frames), labels.shape[1]), fill, np.float32)
    out[hit] = labels[src[hit]]
    out_valid = np.zeros(len(cache_frames), bool)
    out_valid[hit] = valid[src[hit]]
    return out, out_valid, int(len(label_frames) - hit.sum())


def load_split(reader: CacheReader, rows: pd.DataFrame, task: TaskSpec) -> tuple[SplitData, dict]:
    """Reads each sample of ``rows`` once from the cache and joins its labels.

    Samples the cache lacks are skipped with a warning (a partial extraction still trains);
    none at all is an error. Returns the split and counts for the run's ``config.json``.
    """
    in_cache = set(reader.video_ids())
    missing = [s for s in rows["sample_id"] if s not in in_cache]
    if len(missing) == len(rows):
        raise ValueError(
            f"{reader.path}: none of the {len(rows)} samples of this split is in the cache "
            f"(e.g. '{missing[0]}'); run `make extract` for this dataset and backbone (the extraction "
            f"summary <backbone>.extract.json lists the samples it found no frames or video for)"
        )
    if missing:
        log.warning(
            "%s: %d of %d samples are not in the cache and are left out (e.g. %s); `make extract` adds those "
            "whose frames or video exist (its summary lists the ones without input)",
            reader.path,
            len(missing),
            len(rows),
            missing[:3],
        )
    fill = task.labels.invalid if task.labels.invalid is not None else np.nan
    xs, faces, frames, labels, valids, ids = [], [], [], [], [], []
    unmatched = 0
    for row in rows.itertuples(index=False):
        if row.sample_id not in in_cache:
            continue
        feats = reader.read(row.sample_id, fields=("embeddings", "frame_index", "face_mask"))
        where = f"{reader.path}:{row.sample_id}"
        if task.level == "frame":
            if row.frame_index is None:
                raise ValueError(f"{where}: task '{task.name}' is per frame but the sample has no frame_index")
            lab_frames = np.asarray(row.frame_index, np.int64).reshape(-1)
            lab = task.encode(row.labels, len(lab_frames), where)
            valid = np.asarray(row.valid, bool).reshape(-1)
            if valid.shape[0] != len(lab_frames):
                raise ValueError(f"{where}: {valid.shape[0]} valid flags for {len(lab_frames)} labelled frames")
            task.check(lab, valid, where)
            lab, valid, n_out = join_by_frame(feats.frame_index, lab_frames, lab, valid, fill, where)
            unmatched += n_out
        else:
            lab = task.encode(row.labels, 1, where)
            valid = np.asarray([bool(row.valid)])
            task.check(lab, valid, where)
        ids.append(row.sample_id)
        xs.append(feats.embeddings)
        faces.append(feats.face_mask)
        frames.append(feats.frame_index)
        labels.append(lab)
        valids.append(valid)
    dim = xs[0].shape[1]
    lengths = [len(f) for f in frames]
    split = SplitData(
        task=task,
        sample_ids=ids,
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        x=np.concatenate(xs + [np.zeros((1, dim), np.float16)]).astype(np.float16, copy=False),
        face=np.concatenate(faces + [np.zeros(1, bool)]),
        frame_index=np.concatenate(frames).astype(np.int32),
        labels=np.concatenate(labels),
        valid=np.concatenate(valids),
        keep=np.ones(0, bool),
    )
    split.keep = np.ones(len(split.valid), bool)
    if unmatched:
        log.warning(
            "%s: %d labelled frames have no cache row (not extracted) and cannot be scored", reader.path, unmatched
        )
    info = {
        "samples": len(ids),
        "samples_missing_in_cache": len(missing),
        "frames": split.n_frames,
        "faces": int(split.face.sum()),
        "valid": int(split.valid.sum()),
        "labelled_frames_not_in_cache": unmatched,
    }
    return split, info


def choose_splits(rows: pd.DataFrame, seed: int, val_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Official train/validation rows of one task, or a seeded subject-independent split of train.

    Subjects are the ``subject`` column (the video name where it is empty), so no person appears
    on both sides. Rows of other splits (test) are not used.
    """
    train = rows[rows["split"] == "train"]
    val = rows[rows["split"] == "validation"]
    if len(val) and len(train):
        return train, val, "official"
    if not len(train):
        raise ValueError(
            f"task '{rows['task'].iloc[0]}' has no training samples (splits present: "
            f"{sorted(rows['split'].unique())}); the dataset manifest must mark a train split"
        )
    groups = train["subject"].where(train["subject"].astype(str) != "", train["video"]).astype(str)
    if groups.nunique() < 2:
        raise ValueError(
            f"task '{rows['task'].iloc[0]}' has no validation split and only one subject; "
            f"a subject-independent split needs at least two"
        )
    gss = GroupShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    tr, va = next(gss.split(train, groups=groups))
    return train.iloc[tr], train.iloc[va], f"subject-independent (seed {seed}, {val_fraction:.0%} of subjects)"


def train_windows(split: SplitData, seq_len: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ``stride`` frames plus one window aligned to each sample's end; windows in which no
    frame (frame tasks) or no face (clip tasks) counts are skipped. Returns ``(sample, start)``."""
    samples, starts = [], []
    for s, length in enumerate(split.lengths):
        st = np.arange(0, max(length - seq_len, 0) + 1, stride)
        if st[-1] != max(length - seq_len, 0):
            st = np.append(st, length - seq_len)
        samples.append(np.full(len(st), s))
        starts.append(st)
    sample, start = np.concatenate(samples), np.concatenate(starts)
    if split.task.level == "frame":
        counts = split.eligible & split.keep
    else:
        counts = split.face[: split.n_frames] & np.repeat(split.eligible & split.keep, split.lengths)
    cum = np.concatenate([[0], np.cumsum(counts)])
    lo = split.offsets[sample] + start
    hi = split.offsets[sample] + np.minimum(start + seq_len, split.lengths[sample])
    useful = cum[hi] - cum[lo] > 0
    return sample[useful], start[useful]


def tiling_windows(lengths: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows covering each frame exactly once: back-to-back, the last one aligned to the end.

    Returns ``(sample, start, own_from)``: a window owns its positions ``own_from..`` (the last
    window of a sample overlaps the one before and owns only the frames that one left).
    """
    samples, starts, owns = [], [], []
    for s, length in enumerate(lengths):
        n_full = max(int(length) // seq_len, 1)
        st = [k * seq_len for k in range(n_full)]
        own = [0] * n_full
        covered = n_full * seq_len
        if covered < length:
            st.append(int(length) - seq_len)
            own.append(covered - st[-1])
        samples += [s] * len(st)
        starts += st
        owns += own
    return np.asarray(samples), np.asarray(starts), np.asarray(owns)


def window_rows(split: SplitData, sample: np.ndarray, start: np.ndarray, seq_len: int) -> np.ndarray:
    """Global row of each window position ``[W, seq_len]``; positions past a sample's end -> pad row."""
    pos = np.arange(seq_len)
    rows = (split.offsets[sample] + start)[:, None] + pos
    real = pos < (split.lengths[sample] - start)[:, None]
    return np.where(real, rows, split.n_frames)


class WindowDataset(keras.utils.PyDataset):
    """Batches of windows gathered from a :class:`SplitData` held in RAM.

    Args:
        split: the arrays. sample, start: the windows. seq_len, batch_size: shapes.
        shuffle_seed: None keeps window order (prediction); an int reshuffles every epoch with a
            generator seeded once, so a run's order is a function of its seed.
        with_targets: False yields inputs only (``model.predict``).
    """

    def __init__(
        self,
        split: SplitData,
        sample: np.ndarray,
        start: np.ndarray,
        seq_len: int,
        batch_size: int,
        shuffle_seed: int | None = None,
        with_targets: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.split, self.sample, self.start = split, np.asarray(sample), np.asarray(start)
        self.seq_len, self.batch_size, self.with_targets = seq_len, batch_size, with_targets
        self._targets = split.targets() if with_targets else None
        self._rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
        self._order = np.arange(len(self.sample))
        self.pad_to = batch_multiple()
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.sample) / self.batch_size)

    def on_epoch_end(self) -> None:
        if self._rng is not None:
            self._order = self._rng.permutation(len(self.sample))

    def skip_epochs(self, n: int) -> None:
        """Draws the orders of ``n`` epochs, so a continued run sees the batches it would have seen."""
        for _ in range(n):
            self.on_epoch_end()

    def real_rows(self) -> np.ndarray:
        """Over every batch's rows in order: True for a window, False for a repeat that padded its batch
        to a multiple of the device count (``pad_to``)."""
        sizes = [len(self._order[i * self.batch_size : (i + 1) * self.batch_size]) for i in range(len(self))]
        return np.concatenate([np.arange(n + (-n % self.pad_to)) < n for n in sizes])

    def __getitem__(self, index: int):
        pick = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        extra = -len(pick) % self.pad_to
        pick = np.concatenate([pick, np.repeat(pick[-1:], extra)]) if extra else pick
        sample, start = self.sample[pick], self.start[pick]
        rows = window_rows(self.split, sample, start, self.seq_len)
        x = {"embeddings": self.split.x[rows].astype(np.float32), "face": self.split.face[rows].astype(np.float32)}
        if not self.with_targets:
            return x
        if self.split.task.level == "frame":
            y = self._targets[rows]
        else:
            y = self._targets[sample].copy()
            y[:, -1] *= x["face"].max(axis=1)  # a window without any face says nothing about its clip
        if extra:
            y = y.copy()
            y[len(pick) - extra :, ..., -1] = 0.0  # the repeated rows count in no loss
        return x, y


def batch_multiple() -> int:
    """Batches split evenly over the devices of the active ``keras.distribution`` (1 without one)."""
    dist = keras.distribution.distribution()
    return int(np.prod(dist.device_mesh.shape)) if dist is not None else 1


def predict_split(
    model: keras.Model, split: SplitData, seq_len: int, batch_size: int, inputs: Callable | None = None
) -> np.ndarray:
    """One prediction per frame ``[N, K]`` (frame tasks) or per sample ``[S, K]`` (clip tasks).

    Frame tasks: each frame's prediction comes from the one tiling window that owns it. Clip
    tasks: the mean of the sample's window outputs, weighted by the faces each window holds.
    ``inputs(sample, start)`` makes the model's input batches of those windows (default: a
    :class:`WindowDataset` of the cached embeddings; the joint CNN+RNN reads face crops instead).
    """
    sample, start, own = tiling_windows(split.lengths, seq_len)
    ds = (
        inputs(sample, start)
        if inputs is not None
        else WindowDataset(split, sample, start, seq_len, batch_size, with_targets=False)
    )
    out = np.asarray(model.predict(ds, verbose=0), np.float32)
    if isinstance(ds, WindowDataset) and ds.pad_to > 1:
        out = out[ds.real_rows()]  # drop the rows that only padded a batch
    rows = window_rows(split, sample, start, seq_len)
    if split.task.level == "frame":
        owned = (np.arange(seq_len) >= own[:, None]) & (rows < split.n_frames)
        pred = np.zeros((split.n_frames, out.shape[-1]), np.float32)
        pred[rows[owned]] = out[owned]
        return pred
    weight = split.face[rows].sum(axis=1).astype(np.float64) + 1e-6
    total = np.zeros((len(split.sample_ids), out.shape[-1]))
    np.add.at(total, sample, out * weight[:, None])
    norm = np.zeros(len(split.sample_ids))
    np.add.at(norm, sample, weight)
    return (total / norm[:, None]).astype(np.float32)


def predictions_table(split: SplitData, pred: np.ndarray) -> pd.DataFrame:
    """The ``predictions_validation.csv`` table (docs/run_format.md) of one split."""
    task = split.task
    if task.level == "frame":
        base = {
            "sample_id": np.repeat(split.sample_ids, split.lengths),
            "frame_index": split.frame_index,
            "face": split.face[: split.n_frames].astype(np.int64),
            "valid": split.valid.astype(np.int64),
        }
    else:
        cum = np.concatenate([[0], np.cumsum(split.face[: split.n_frames])])
        any_face = cum[split.offsets[1:]] - cum[split.offsets[:-1]] > 0
        base = {
            "sample_id": split.sample_ids,
            "frame_index": np.zeros(len(split.sample_ids), np.int64),
            "face": any_face.astype(np.int64),
            "valid": split.valid.astype(np.int64),
        }
    return pd.DataFrame({**base, **task.prediction_columns(split.labels, pred)})


def embedding_stats(split: SplitData) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the training embeddings over frames with a face (float64 sums)."""
    faces = split.x[: split.n_frames][split.face[: split.n_frames]]
    if not len(faces):
        raise ValueError(
            "the training split has no frame with a face; check the cache's face_hit_rate "
            "(`make extract` log) or the detector settings"
        )
    mean = faces.mean(axis=0, dtype=np.float64)
    var = faces.var(axis=0, dtype=np.float64)
    return mean.astype(np.float32), np.maximum(var, 1e-6).astype(np.float32)
