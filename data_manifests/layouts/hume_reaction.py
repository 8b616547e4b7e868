"""The Hume-Reaction layout of the ABAW5 Emotional Reaction Intensity (ERI) challenge.

On disk (names come from the manifest)::

    <root>/data_info.csv         File_ID,Split,<7 intensities>, one line per clip
    <root>/<videos>/**/<id>.mp4  File_ID "[00001]" -> video 00001.mp4, anywhere below

The intensities are Adoration, Amusement, Anxiety, Disgust, Empathic-Pain, Fear, Surprise.

``Split`` is Train, Val or Test; the seven intensities are in [0, 1], and all seven are empty for
unlabelled (test) clips. Without a ``data_info.csv``, per-split files (``train.csv``, ``val.csv``,
``test.csv``: the same columns without ``Split``) are read instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from data_manifests.layouts.common import (
    find_files,
    index_audio,
    index_media,
    media_folder,
    read_csv_strings,
    row,
)
from data_manifests.schema import LABELS, DatasetError

if TYPE_CHECKING:
    from data_manifests.loader import Manifest

log = logging.getLogger(__name__)

TASK = "eri"
SPLIT_COLUMN = "Split"


def load(manifest: Manifest, root: Path) -> list[dict]:
    """Rows of the sample table for a Hume-Reaction tree (see the module docstring).

    Raises:
        DatasetError: neither ``data_info.csv`` nor a per-split CSV found, a missing column, an
            unknown split, an intensity outside [0, 1], or one clip listed twice.
    """
    depth = int(manifest.option("search_depth"))
    info = find_files(root, manifest.path("info"), depth)
    if len(info) > 1:
        raise DatasetError(
            f"{root}: found {len(info)} {manifest.path('info')} files ({', '.join(map(str, info))}); expected one"
        )
    if info:
        sources = [(info[0], None)]
    else:
        sources = []
        for name, split in manifest.option("split_files").items():
            sources += [(path, split) for path in find_files(root, name, depth)[:1]]
    if not sources:
        raise DatasetError(
            f"{root}: no {manifest.path('info')} (or "
            f"{', '.join(manifest.option('split_files'))}) within {depth} levels; "
            f"expected File_ID,Split,{','.join(LABELS[TASK].names)} rows"
        )
    audio = index_audio(root, manifest.paths.get("audio"))
    media = index_media(media_folder(root, manifest.paths.get("videos")))
    rows, seen = [], {}
    for path, split in sources:
        for clip_id, clip_split, labels, valid in _read(path, split, manifest):
            if clip_id in seen:
                raise DatasetError(
                    f"{path}: File_ID [{clip_id}] is also listed in {seen[clip_id]}; expected each clip once"
                )
            seen[clip_id] = path
            rows.append(
                row(
                    sample_id=clip_id,
                    video=clip_id,
                    subject=clip_id,
                    side="",
                    split=clip_split,
                    task=TASK,
                    media_path=media.get(clip_id),
                    audio_path=audio.get(clip_id),
                    frames_dir=None,
                    frame_index=None,
                    labels=labels,
                    valid=valid,
                )
            )
    missing = sum(not r["media_path"] for r in rows)
    if missing:
        log.warning("%s: %d of %d clips have no video file", root, missing, len(rows))
    return rows


def _read(path: Path, split: str | None, manifest: Manifest):
    """(id, split, labels float32 [7], valid) per line of one CSV file."""
    names = list(LABELS[TASK].names)
    id_column = manifest.option("id_column")
    required = [id_column, *([SPLIT_COLUMN] if split is None else []), *names]
    table = read_csv_strings(path, required)
    split_values = manifest.option("split_values")
    raw = table[names]
    empty = (raw == "").to_numpy()
    values = raw.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad_value = ~empty & ~((values >= 0) & (values <= 1))
    partial = empty.any(axis=1) & ~empty.all(axis=1)
    splits = table[SPLIT_COLUMN].tolist() if split is None else [split] * len(table)
    for i, (clip, bad, part, value) in enumerate(
        zip(table[id_column].tolist(), bad_value.any(axis=1), partial, splits)
    ):
        line = i + 2
        if bad or part:
            raise DatasetError(
                f"{path}:{line}: expected 7 intensities {','.join(names)} in "
                f"[0, 1] (or all 7 empty), got {_text(table, i)!r}"
            )
        clip_id = clip.strip("[]").strip()
        if not clip_id:
            raise DatasetError(f"{path}:{line}: expected a {id_column} like [00001], got {_text(table, i)!r}")
        clip_split = value if split is not None else split_values.get(value)
        if clip_split is None:
            raise DatasetError(
                f"{path}:{line}: expected {SPLIT_COLUMN} one of {', '.join(split_values)}, got {value!r}"
            )
        labelled = not empty[i].all()
        labels = values[i].astype(np.float32) if labelled else np.zeros(len(names), np.float32)
        yield clip_id, clip_split, labels, bool(labelled)


def _text(table: pd.DataFrame, i: int) -> str:
    return ",".join(table.iloc[i])
