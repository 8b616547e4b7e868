"""Face crops with frame labels, streamed from disk: an index of (crop, label), then batches.

:func:`frame_index` lists every annotated frame whose crop exists, from file names and frame lists
only: a ``cropped_aligned`` jpg, or for raw-video samples a crop that ``make extract SAVE_CROPS=1``
stored in ``<backbone>.crops.h5`` (:func:`saved_crops` finds it). A frame without a crop is a frame
without a face, and an unannotated frame is never read.
:class:`CropDataset` is a ``keras.utils.PyDataset`` whose ``__getitem__`` reads the files of that
one batch, augments them (training) and resizes them to the model's input: no epoch ever holds
more than the batches in flight.

Example::

    train_rows, val_rows, how = split_rows(cfg, table)
    train = frame_index(train_rows, TASKS["expr"])
    train, dist = rebalanced(train, cfg.train_config())
    ds = CropDataset(train, (64, 64, 1), batch_size=64, augment=Augment(), seed=0)
    x, y = ds[0]; x.shape, y.shape
    # ((64, 64, 64, 1), (64, 2))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import keras
import numpy as np
import pandas as pd

from core.tasks import TaskSpec
from extract.backbones import to_model_input
from extract.crops import CropStore
from extract.sources import frame_numbers
from train.config import TrainConfig
from train.data import choose_splits
from train.rebalance import apply_rebalance
from train.run import label_rows

SAVED = "saved:"  # path prefix of a crop in the crops file: saved:<video id>/<row>


@dataclass(frozen=True)
class FrameIndex:
    """Annotated frames with a face crop on disk, one row each.

    Attributes:
        task: the task. paths: per frame, a jpg path or ``saved:<video id>/<row>`` (a crop of
            ``store``). sample_ids, frame_index: where it comes from.
        labels: float32 ``[N, target_cols]`` (a class id for class tasks), every one valid.
        store: the crops file the ``saved:`` paths point into (None: jpgs only).
    """

    task: TaskSpec
    paths: np.ndarray
    sample_ids: np.ndarray
    frame_index: np.ndarray
    labels: np.ndarray
    store: CropStore | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, keep: np.ndarray) -> "FrameIndex":
        return FrameIndex(
            self.task, self.paths[keep], self.sample_ids[keep], self.frame_index[keep], self.labels[keep], self.store
        )

    def read(self, path: str) -> np.ndarray:
        """RGB uint8 crop of one of :attr:`paths`."""
        return read_any(path, self.store)

    def targets(self) -> np.ndarray:
        """``[N, C + 1]``: labels and a loss-mask column of ones (``core.losses`` read it)."""
        return np.concatenate([self.labels, np.ones((len(self), 1), np.float32)], axis=1)


def read_any(path: str, store: CropStore | None) -> np.ndarray:
    """RGB uint8 crop: a jpg path, or ``saved:<video id>/<row>`` in ``store``."""
    if path.startswith(SAVED):
        video_id, row = path[len(SAVED) :].rsplit("/", 1)
        return store.image(video_id, int(row))
    return read_crop(path)


def crops_of(row, store: CropStore | None) -> tuple[dict[int, str], str]:
    """``{frame number: crop path}`` of one sample (its ``cropped_aligned`` jpgs, else its crops in
    ``store``) and a name for it in errors."""
    if row.frames_dir:
        return {int(n): str(path) for n, path in frame_numbers(row.frames_dir).items()}, str(row.frames_dir)
    if store is not None:
        return {
            int(n): f"{SAVED}{row.sample_id}/{k}" for k, n in enumerate(store.frames(row.sample_id))
        }, f"{store.path}: {row.sample_id}"
    raise ValueError(
        f"sample '{row.sample_id}' has no cropped_aligned folder; store its face crops "
        f"with make extract INPUT=video SAVE_CROPS=1, or pass --crops <file>"
    )


def split_rows(cfg, table: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The task's rows of the dataset, split as stage two splits them (``train.data.choose_splits``)."""
    return choose_splits(label_rows(cfg, table), cfg.seed, cfg.val_fraction)


def saved_crops(cfg, rows: pd.DataFrame) -> CropStore | None:
    """The crops file for the samples of ``rows`` without ``cropped_aligned``; None if all have it.

    ``cfg.crops`` when set, else the one ``*.crops.h5`` under ``<cfg.cache_dir>/<cfg.dataset>/``.

    Raises:
        ValueError: such samples exist and no crops file is found, or several are (which to use).
    """
    if rows.frames_dir.astype(bool).all():
        return None
    if cfg.crops:
        return CropStore(cfg.crops)
    folder = Path(cfg.cache_dir) / cfg.dataset
    found = sorted(folder.glob("*.crops.h5")) if folder.is_dir() else []
    if len(found) > 1:
        raise ValueError(
            f"{folder}: several crops files ({', '.join(p.name for p in found)}); pass --crops <file> to choose one"
        )
    if not found:
        missing = rows.sample_id[~rows.frames_dir.astype(bool)].iloc[0]
        raise ValueError(
            f"sample '{missing}' has no cropped_aligned folder and {folder} holds no crops file; "
            f"store its face crops once with make extract DATASET={cfg.dataset} INPUT=video "
            f"SAVE_CROPS=1 (CACHE_DIR={cfg.cache_dir}), or pass --crops <file>"
        )
    return CropStore(found[0])


def labelled_crops(
    row, task: TaskSpec, store: CropStore | None
) -> tuple[dict[int, str], np.ndarray, np.ndarray, np.ndarray]:
    """One label row's ``{frame: crop path}`` (:func:`crops_of`), frame numbers, encoded labels
    and valid mask, checked against the task."""
    crop_of, where = crops_of(row, store)
    numbers = np.asarray(row.frame_index, np.int64).reshape(-1)
    labels = task.encode(row.labels, len(numbers), where)
    valid = np.asarray(row.valid, bool).reshape(-1)
    task.check(labels, valid, where)
    return crop_of, numbers, labels, valid


def frame_index(rows: pd.DataFrame, task: TaskSpec, store: CropStore | None = None) -> FrameIndex:
    """Every valid label of ``rows`` whose frame has a crop: a jpg in the sample's ``frames_dir``,
    or, for a sample without one, a crop of ``store`` (``make extract SAVE_CROPS=1``).

    Masked labels (the dataset's invalid marker) and frames without a crop are left out here, so
    they are never read nor counted. Only directory listings and frame lists are read, no image.

    Raises:
        ValueError: a sample with neither, or no usable frame at all.
    """
    paths, samples, frames, labels = [], [], [], []
    for row in rows.itertuples(index=False):
        crop_of, numbers, lab, valid = labelled_crops(row, task, store)
        has_crop = np.fromiter((int(n) in crop_of for n in numbers), bool, len(numbers))
        use = valid & has_crop
        paths += [crop_of[int(n)] for n in numbers[use]]
        samples += [row.sample_id] * int(use.sum())
        frames.append(numbers[use])
        labels.append(lab[use])
    if not paths:
        raise ValueError(f"none of the {len(rows)} samples has an annotated '{task.name}' frame with a crop")
    return FrameIndex(
        task,
        np.asarray(paths, object),
        np.asarray(samples, object),
        np.concatenate(frames).astype(np.int64),
        np.concatenate(labels).astype(np.float32),
        store,
    )


def rebalanced(index: FrameIndex, cfg: TrainConfig) -> tuple[FrameIndex, dict]:
    """Stage two's ``--rebalance`` on a training index (call it on the training split only).

    Returns the frames kept and the label distribution before and after (``train.rebalance``).
    """
    keep, dist = apply_rebalance(cfg, index.task, index.labels, np.ones(len(index), bool))
    if not keep.any():
        raise ValueError(f"--rebalance {cfg.rebalance} kept no training frame")
    return index.subset(keep), dist


def read_crop(path: str) -> np.ndarray:
    """RGB uint8 image of one jpg; a file that does not decode is named in the error."""
    data = np.fromfile(path, dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ValueError(
            f"{path}: not a decodable image; replace it, or delete it so that the frame "
            f"counts as a frame without a face"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class Augment:
    """Training augmentation on the RGB crop before resizing (see ``FinetuneConfig``)."""

    flip: bool = True
    shift: float = 0.06
    rotation: float = 8.0
    brightness: float = 0.2

    @classmethod
    def of(cls, cfg) -> "Augment":
        return cls(cfg.flip, cfg.shift, cfg.rotation, cfg.brightness)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = image.shape[:2]
        if self.flip and rng.random() < 0.5:
            image = image[:, ::-1]
        angle = rng.uniform(-self.rotation, self.rotation)
        dx, dy = rng.uniform(-self.shift, self.shift, size=2) * (w, h)
        if angle or dx or dy:
            matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
            matrix[:, 2] += (dx, dy)
            image = cv2.warpAffine(
                np.ascontiguousarray(image), matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
            )
        if self.brightness:
            factor = rng.uniform(1 - self.brightness, 1 + self.brightness)
            image = np.clip(image.astype(np.float32) * factor, 0, 255).astype(np.uint8)
        return image


class CropDataset(keras.utils.PyDataset):
    """Batches ``(pixels float32 0..255 [B, H, W, C], targets [B, C + 1])`` read from disk per batch.

    Args:
        index: the frames. input_size: (H, W, C) of the model (``to_model_input``).
        batch_size: crops per batch.
        augment: an :class:`Augment` for training, None for evaluation.
        seed: None keeps index order (evaluation); an int shuffles every epoch, and seeds the
            augmentation of each crop from ``(seed, epoch, position)`` so that threads do not
            change the result.
        frames_per_epoch: crops drawn per epoch (0: all), a fresh seeded draw every epoch.
        reader: ``path -> RGB uint8`` (default: ``index.read``: jpgs and saved crops).
        workers: reader threads (``keras.utils.PyDataset``).
    """

    def __init__(
        self,
        index: FrameIndex,
        input_size: tuple,
        batch_size: int,
        augment: Augment | None = None,
        seed: int | None = None,
        frames_per_epoch: int = 0,
        reader: Callable | None = None,
        workers: int = 1,
        **kwargs,
    ):
        super().__init__(workers=workers, use_multiprocessing=False, **kwargs)
        self.index, self.input_size, self.batch_size = index, tuple(input_size), batch_size
        self.augment, self.seed, self.reader = augment, seed, reader or index.read
        self.frames_per_epoch = min(frames_per_epoch or len(index), len(index))
        self._targets = index.targets()
        self.epoch = -1
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(self.frames_per_epoch / self.batch_size)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        if self.seed is None:
            self._order = np.arange(self.frames_per_epoch)
        else:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._order = rng.permutation(len(self.index))[: self.frames_per_epoch]

    def picks(self, batch: int) -> np.ndarray:
        """Index rows of one batch."""
        return self._order[batch * self.batch_size : (batch + 1) * self.batch_size]

    def images(self, batch: int, sizes: tuple) -> list[np.ndarray]:
        """The batch's crops, read and augmented once, at each input size of ``sizes`` (uint8)."""
        picks = self.picks(batch)
        out = [np.empty((len(picks),) + tuple(s), np.uint8) for s in sizes]
        for k, row in enumerate(picks):
            image = self.reader(self.index.paths[row])
            if self.augment is not None:
                start = batch * self.batch_size + k
                image = self.augment(image, np.random.default_rng([self.seed or 0, self.epoch, start]))
            for arr, size in zip(out, sizes):
                arr[k] = to_model_input(np.ascontiguousarray(image), size)
        return out

    def __getitem__(self, batch: int):
        (x,) = self.images(batch, (self.input_size,))
        return x.astype(np.float32), self._targets[self.picks(batch)]


def predict_index(
    model: keras.Model, index: FrameIndex, input_size: tuple, batch_size: int, workers: int = 1
) -> np.ndarray:
    """The model's output for every frame of ``index``, in order, without augmentation."""
    ds = CropDataset(index, input_size, batch_size, workers=workers)
    return np.concatenate([np.asarray(model.predict_on_batch(ds[b][0])) for b in range(len(ds))])


def predictions_table(index: FrameIndex, pred: np.ndarray) -> pd.DataFrame:
    """Per-frame predictions in the columns of docs/run_format.md (every row annotated, with a face)."""
    n = len(index)
    base = {
        "sample_id": index.sample_ids,
        "frame_index": index.frame_index,
        "face": np.ones(n, np.int64),
        "valid": np.ones(n, np.int64),
    }
    return pd.DataFrame({**base, **index.task.prediction_columns(index.labels, pred)})


def sample_frames(index: FrameIndex, n: int, seed: int) -> FrameIndex:
    """A fixed seeded subset of ``n`` frames (0 or >= len: all), in index order."""
    if not n or n >= len(index):
        return index
    keep = np.zeros(len(index), bool)
    keep[np.random.default_rng(seed).choice(len(index), n, replace=False)] = True
    return index.subset(keep)
