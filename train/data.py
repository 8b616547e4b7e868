"""Cached embeddings + labels -> in-RAM arrays -> windows -> batches.

Each sample's cached rows are read once and concatenated into one float16 array per split, with a
zero row at the end that padding positions point to. Labels are joined to cache rows by *frame
number* (cache ``frame_index`` against the label table's ``frame_index``), never by position.

Windows and batches are :mod:`train.windows`. A split larger than ``--max-ram-gb`` keeps its
embeddings in the cache (:mod:`train.streaming`).

Targets are ``[..., C + 1]``: labels (invalid ones replaced by 0 so no loss sees a marker value)
and the loss mask = annotated AND face found AND kept by rebalancing AND not padding.

Example::

    reader = CacheReader(cache_path("cache", "synthetic", "fer"))
    split = load_split(reader, rows[rows.split == "train"], TASKS["expr"])
    split.n_frames, split.x.shape, split.labels.shape
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from core.tasks import TaskSpec
from extract.cache import CacheReader, audio_cache_name, cache_path
from train.streaming import DEFAULT_MAX_RAM_GB, CachedEmbeddings

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
        audio: float16 ``[N + 1, A]`` audio features of the same frames (audio-visual runs), else None.
        heard: bool ``[N + 1]``: the frame has audio (audio-visual runs), else None.
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
    audio: np.ndarray | None = None
    heard: np.ndarray | None = None

    @property
    def present(self) -> np.ndarray:
        """bool ``[N + 1]``: the frame has an input the model sees (a face, or audio when fused)."""
        return self.face if self.heard is None else self.face | self.heard

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
        return self.valid & self.present[: self.n_frames]

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


def check_backbone(reader: CacheReader, backbone: str) -> None:
    """The cache must hold what its name says: a file renamed or copied to another backbone's name
    would otherwise train and be reported as that backbone."""
    recorded = reader.meta.backbone
    if cache_path("", "-", recorded).name != cache_path("", "-", backbone).name:
        raise ValueError(
            f"{reader.path}: records backbone '{recorded}', not '{backbone}' (renamed or copied?); use "
            f"BACKBONE={recorded}, or run `make extract BACKBONE={backbone}` for a cache of that backbone"
        )


def open_caches(cache_dir, dataset: str, cfg) -> tuple[CacheReader, CacheReader | None]:
    """The run's frame cache (``cfg.cache_name``) and, for an audio-visual run, its audio cache."""
    reader = CacheReader(cache_path(cache_dir, dataset, cfg.cache_name))
    check_backbone(reader, cfg.cache_name)
    audio = CacheReader(cache_path(cache_dir, dataset, audio_cache_name(cfg.audio))) if cfg.fused else None
    return reader, audio


def join_audio(reader: CacheReader, ids: list[str], frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, list]:
    """The audio cache's rows for each sample's frames, matched on frame number.

    Returns ``(audio float16 [N + 1, A], heard bool [N + 1], samples the audio cache lacks)``; a
    frame without an audio row gets zeros and ``heard=False``, so a sample without sound still trains
    on its faces.
    """
    dim, have = reader.meta.embedding_dim, set(reader.video_ids())
    xs, hs, missing = [], [], []
    for sample_id, wanted in zip(ids, frames):
        if sample_id not in have:
            missing.append(sample_id)
            xs.append(np.zeros((len(wanted), dim), np.float16))
            hs.append(np.zeros(len(wanted), bool))
            continue
        rows = reader.read(sample_id)
        # The audio rows are joined like labels: by frame number (float16 -> float32 -> float16 is exact).
        x, heard, _ = join_by_frame(
            wanted, rows.frame_index, rows.embeddings, rows.face_mask, 0.0, f"{reader.path}:{sample_id}"
        )
        xs.append(x.astype(np.float16))
        hs.append(heard)
    if missing:
        log.warning(
            "%s: %d samples have no audio rows and train on their faces alone (e.g. %s); `make extract AUDIO=%s`",
            reader.path,
            len(missing),
            missing[:3],
            reader.meta.extra.get("extractor", "logmel"),
        )
    audio = np.concatenate(xs + [np.zeros((1, dim), np.float16)])
    return audio, np.concatenate(hs + [np.zeros(1, bool)]), missing


def load_split(
    reader: CacheReader,
    rows: pd.DataFrame,
    task: TaskSpec,
    max_ram_gb: float = DEFAULT_MAX_RAM_GB,
    audio: CacheReader | None = None,
) -> tuple[SplitData, dict]:
    """Reads each sample of ``rows`` from the cache and joins its labels (and, given ``audio``, the
    audio cache's rows of the same frames: :func:`join_audio`).

    Samples the cache lacks are skipped with a warning (a partial extraction still trains);
    none at all is an error. Embeddings larger than ``max_ram_gb`` (float16) stay in the cache and
    stream window by window (``train.streaming.CachedEmbeddings``); audio features are read into RAM.
    Returns the split and counts for the run's ``config.json``.
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
    faces, frames, labels, valids, ids = [], [], [], [], []
    unmatched = 0
    for row in rows.itertuples(index=False):
        if row.sample_id not in in_cache:
            continue
        feats = reader.read(row.sample_id, fields=("frame_index", "face_mask"))
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
        faces.append(feats.face_mask)
        frames.append(feats.frame_index)
        labels.append(lab)
        valids.append(valid)
    lengths = [len(f) for f in frames]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    x = _embeddings(reader, ids, offsets, max_ram_gb)
    streamed = isinstance(x, CachedEmbeddings)
    split = SplitData(
        task=task,
        sample_ids=ids,
        offsets=offsets,
        x=x,
        face=np.concatenate(faces + [np.zeros(1, bool)]),
        frame_index=np.concatenate(frames).astype(np.int32),
        labels=np.concatenate(labels),
        valid=np.concatenate(valids),
        keep=np.ones(0, bool),
    )
    split.keep = np.ones(len(split.valid), bool)
    if audio is not None:
        split.audio, split.heard, no_audio = join_audio(audio, ids, frames)
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
        "streamed": bool(streamed),
    }
    if audio is not None:
        info.update(heard=int(split.heard.sum()), samples_without_audio=len(no_audio))
    return split, info


def _embeddings(reader: CacheReader, ids: list[str], offsets: np.ndarray, max_ram_gb: float):
    """The split's ``x``: float16 ``[N + 1, D]`` in RAM, or read window by window when over the budget."""
    dim = reader.meta.embedding_dim
    if (int(offsets[-1]) + 1) * dim * 2 > max_ram_gb * 2**30:
        log.info(
            "%s: %d frames x %d exceed --max-ram-gb %g: windows stream from the cache",
            reader.path,
            offsets[-1],
            dim,
            max_ram_gb,
        )
        return CachedEmbeddings(reader.path, ids, offsets, dim)
    xs = [reader.read(i, fields=("embeddings",)).embeddings for i in ids]
    return np.concatenate(xs + [np.zeros((1, dim), np.float16)]).astype(np.float16, copy=False)


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


def audio_stats(split: SplitData) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the training audio features over the frames with audio (float64 sums)."""
    heard = split.audio[: split.n_frames][split.heard[: split.n_frames]]
    if not len(heard):
        raise ValueError("the training split has no frame with audio; check the audio cache (make extract AUDIO=...)")
    mean, var = heard.mean(axis=0, dtype=np.float64), heard.var(axis=0, dtype=np.float64)
    return mean.astype(np.float32), np.maximum(var, 1e-6).astype(np.float32)


def embedding_stats(split: SplitData) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the training embeddings over frames with a face (float64 sums)."""
    face = split.face[: split.n_frames]
    if isinstance(split.x, CachedEmbeddings):
        mean, var, count = split.x.face_moments(face)
    else:
        faces = split.x[: split.n_frames][face]
        count = len(faces)
        if count:
            mean, var = faces.mean(axis=0, dtype=np.float64), faces.var(axis=0, dtype=np.float64)
    if not count:
        raise ValueError(
            "the training split has no frame with a face; check the cache's face_hit_rate "
            "(`make extract` log) or the detector settings"
        )
    return mean.astype(np.float32), np.maximum(var, 1e-6).astype(np.float32)
