"""Windows of a split and their batches: :func:`train_windows` (overlapping, for training),
:func:`tiling_windows` (each frame owned by one window, for prediction), :class:`WindowDataset`
(a ``keras.utils.PyDataset``, no tf.data) and :func:`predict_split`.

Windows are ``(sample, start)`` pairs; a batch is one fancy-index gather from the split's
embeddings (in RAM, or read from the cache by ``train.streaming.CachedEmbeddings``), so the data
path costs microseconds per window on any backend. Under a ``keras.distribution`` every batch is
padded to a multiple of the device count with rows that count in no loss and no prediction.

Example::

    sample, start = train_windows(split, seq_len=64, stride=32)
    ds = WindowDataset(split, sample, start, seq_len=64, batch_size=32, shuffle_seed=0)
    x, y = ds[0]; x["embeddings"].shape, x["face"].shape, y.shape
    # ((32, 64, 128), (32, 64), (32, 64, 2))
"""

from __future__ import annotations

import math
from typing import Callable

import keras
import numpy as np

from train.data import SplitData


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
        counts = split.present[: split.n_frames] & np.repeat(split.eligible & split.keep, split.lengths)
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
        modality_dropout: audio-visual splits: the share of windows (drawn per batch from the
            shuffle generator) whose face or audio stream (half each) is blanked, masks included.
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
        modality_dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.split, self.sample, self.start = split, np.asarray(sample), np.asarray(start)
        self.seq_len, self.batch_size, self.with_targets = seq_len, batch_size, with_targets
        self._targets = split.targets() if with_targets else None
        self._rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
        self.modality_dropout = modality_dropout if split.audio is not None else 0.0
        self._drops = None
        self._order = np.arange(len(self.sample))
        self.pad_to = batch_multiple()
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.sample) / self.batch_size)

    def on_epoch_end(self) -> None:
        if self._rng is not None:
            self._order = self._rng.permutation(len(self.sample))
            if self.modality_dropout:  # 0: both streams, 1: no face, 2: no audio; drawn with the order, so
                # a continued run (skip_epochs) blanks the windows it would have blanked
                u = self._rng.random(len(self.sample))
                self._drops = np.where(u < self.modality_dropout / 2, 1, np.where(u < self.modality_dropout, 2, 0))

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
        if self.split.audio is not None:
            x.update(audio=self.split.audio[rows].astype(np.float32), heard=self.split.heard[rows].astype(np.float32))
            if self._drops is not None:
                drop = self._drops[pick]
                x["face"][drop == 1], x["heard"][drop == 2] = 0.0, 0.0
        if not self.with_targets:
            return x
        if self.split.task.level == "frame":
            y = self._targets[rows]
        else:
            y = self._targets[sample].copy()
            y[:, -1] *= self.split.present[rows].max(axis=1)  # a window without any input says nothing of its clip
        if extra:
            y = y.copy()
            y[len(pick) - extra :, ..., -1] = 0.0  # the repeated rows count in no loss
        return x, y


def batch_multiple() -> int:
    """Batches split evenly over the devices of the active ``keras.distribution`` (1 without one)."""
    dist = keras.distribution.distribution()
    return int(np.prod(dist.device_mesh.shape)) if dist is not None else 1


def _tiled_outputs(model: keras.Model, split: SplitData, seq_len: int, batch_size: int, inputs: Callable | None):
    """The model's output on each tiling window: ``(sample, own_from, rows [W, T], out)``."""
    sample, start, own = tiling_windows(split.lengths, seq_len)
    ds = (
        inputs(sample, start)
        if inputs is not None
        else WindowDataset(split, sample, start, seq_len, batch_size, with_targets=False)
    )
    out = np.asarray(model.predict(ds, verbose=0), np.float32)
    if isinstance(ds, WindowDataset) and ds.pad_to > 1:
        out = out[ds.real_rows()]  # drop the rows that only padded a batch
    return sample, own, window_rows(split, sample, start, seq_len), out


def _by_owner(split: SplitData, own: np.ndarray, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``[N, K]``: each frame's value from the window that owns it; a window-level output ``[W, K]``
    goes to every frame its window owns."""
    owned = (np.arange(rows.shape[1]) >= own[:, None]) & (rows < split.n_frames)
    if out.ndim == 2:
        out = np.broadcast_to(out[:, None, :], (*rows.shape, out.shape[-1]))
    pred = np.zeros((split.n_frames, out.shape[-1]), np.float32)
    pred[rows[owned]] = out[owned]
    return pred


def predict_split(
    model: keras.Model, split: SplitData, seq_len: int, batch_size: int, inputs: Callable | None = None
) -> np.ndarray:
    """One prediction per frame ``[N, K]`` (frame tasks) or per sample ``[S, K]`` (clip tasks).

    Frame tasks: each frame's prediction comes from the one tiling window that owns it. Clip
    tasks: the mean of the sample's window outputs, weighted by the faces each window holds.
    ``inputs(sample, start)`` makes the model's input batches of those windows (default: a
    :class:`WindowDataset` of the cached embeddings; the joint CNN+RNN reads face crops instead).
    """
    sample, own, rows, out = _tiled_outputs(model, split, seq_len, batch_size, inputs)
    if split.task.level == "frame":
        return _by_owner(split, own, rows, out)
    weight = split.present[rows].sum(axis=1).astype(np.float64) + 1e-6
    total = np.zeros((len(split.sample_ids), out.shape[-1]))
    np.add.at(total, sample, out * weight[:, None])
    norm = np.zeros(len(split.sample_ids))
    np.add.at(norm, sample, weight)
    return (total / norm[:, None]).astype(np.float32)


def predict_frames(model: keras.Model, split: SplitData, seq_len: int, batch_size: int) -> np.ndarray:
    """``[N, K]`` per frame for any task: a frame task's as :func:`predict_split`; a clip model's
    window output given to every frame its window owns (``make analyze``'s timeline)."""
    _, own, rows, out = _tiled_outputs(model, split, seq_len, batch_size, None)
    return _by_owner(split, own, rows, out)
