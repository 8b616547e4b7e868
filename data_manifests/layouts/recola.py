"""The RECOLA layout: per-frame valence and arousal gold standards (AVEC 2015/2016 files).

On disk (names come from the manifest)::

    <root>/ratings_gold_standard/arousal/<name>.arff   (or .csv)
    <root>/ratings_gold_standard/valence/<name>.arff
    <root>/<videos>/**/<name>.mp4                     anywhere below; 25 fps

``<name>`` is a participant (``P16``) or an AVEC 2016 instance (``train_1``, ``dev_1``). An ARFF file
declares a time attribute (``frameTime`` or ``time``, seconds) and ``GoldStandard``, then one
``@data`` row per 40 ms step, e.g. ``'P16',0.040000,0.125``; a CSV file has the same columns in a
header line (``,`` or ``;`` separated). Time t becomes the 1-based frame ``round(t * fps) + 1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from data_manifests.layouts.common import (
    find_dirs,
    index_audio,
    index_media,
    media_folder,
    one_dir,
    read_text,
    row,
    strip_lines,
)
from data_manifests.schema import LABELS, DatasetError

if TYPE_CHECKING:
    from data_manifests.loader import Manifest

TASK = "va"
TIME_NAMES = ("frametime", "time")
VALUE_NAME = "goldstandard"
SUFFIXES = (".arff", ".csv")


def load(manifest: Manifest, root: Path) -> list[dict]:
    """Rows of the sample table for a RECOLA tree (see the module docstring).

    Raises:
        DatasetError: no ratings folder, a recording rated on one dimension only, or a malformed
            ratings file (``"<path>:<line>: expected ..."``).
    """
    fps = float(manifest.option("fps"))
    folders = manifest.option("dimensions")
    ratings_name = manifest.path("ratings")
    depth = int(manifest.option("search_depth"))
    ratings = one_dir(find_dirs(root, [ratings_name], depth), [ratings_name], f"{root}: ratings")
    if ratings is None:
        raise DatasetError(
            f"{root}: no {ratings_name}/ folder within {depth} levels; expected "
            f"{ratings_name}/{{{','.join(folders.values())}}}/<name>.arff"
        )
    dims = LABELS[TASK].names
    files = {dim: _rating_files(ratings / folders[dim]) for dim in dims}
    names = sorted(set().union(*files.values()))
    if not names:
        raise DatasetError(
            f"{ratings}: no rating files; expected {'/ and '.join(folders[d] for d in dims)}/ with <name>.arff or .csv"
        )
    audio = index_audio(root, manifest.paths.get("audio"))
    media = index_media(media_folder(root, manifest.paths.get("videos")), prune=[ratings])
    rows = []
    for name in names:
        lacking = [folders[d] for d in dims if name not in files[d]]
        if lacking:
            present = next(files[d][name] for d in dims if name in files[d])
            raise DatasetError(
                f"{present}: no matching {lacking[0]} file; expected {ratings / lacking[0] / present.name} too"
            )
        frame_index, labels = _join([read_ratings(files[d][name], fps) for d in dims])
        rows.append(
            row(
                sample_id=name,
                video=name,
                subject=name,
                side="",
                split=_split(name, manifest),
                task=TASK,
                media_path=media.get(name),
                audio_path=audio.get(name),
                frames_dir=None,
                frame_index=frame_index,
                labels=labels,
                valid=(labels != LABELS[TASK].invalid).all(axis=1),
            )
        )
    return rows


def _rating_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in SUFFIXES:
            continue
        if path.stem in files:
            raise DatasetError(
                f"{path}: {files[path.stem].name} rates the same recording; expected one file per recording"
            )
        files[path.stem] = path
    return files


def _split(name: str, manifest: Manifest) -> str:
    for split, members in manifest.option("splits").items():
        if name in members:
            return split
    for prefix, split in manifest.option("split_prefixes").items():
        if name.startswith(prefix):
            return split
    return manifest.option("default_split")


def _join(series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Join per-dimension (frames, values) by frame number; a frame rated on one dimension only
    keeps the invalid marker on the other."""
    frames = np.unique(np.concatenate([f for f, _ in series]))
    labels = np.full((len(frames), len(series)), LABELS[TASK].invalid, np.float32)
    for k, (f, v) in enumerate(series):
        labels[np.searchsorted(frames, f), k] = v
    return frames.astype(np.int32), labels


def read_ratings(path: Path, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """One gold-standard file as (1-based frame numbers int64 [N], values float64 [N]).

    Args:
        path: an ``.arff`` or ``.csv`` file with a time column (seconds) and ``GoldStandard``.
        fps: video frame rate; time t is frame ``round(t * fps) + 1``.

    Raises:
        DatasetError: ``"<path>:<line>: expected ..."`` for a missing attribute, a wrong column
            count, a non-numeric or negative time, a value outside [-1, 1], or two rows on one frame.

    Example::

        frames, values = read_ratings(Path("ratings_gold_standard/arousal/P16.arff"), 25)
    """
    lines = strip_lines(read_text(path))
    if path.suffix.lower() == ".arff":
        columns, header_line, records = _arff_records(path, lines)
    else:
        columns, header_line, records = _csv_records(path, lines)
    lowered = [c.lower() for c in columns]
    time_col = next((lowered.index(n) for n in TIME_NAMES if n in lowered), None)
    value_col = lowered.index(VALUE_NAME) if VALUE_NAME in lowered else None
    if time_col is None or value_col is None:
        raise DatasetError(
            f"{path}:{header_line}: expected a time column (frameTime or time) "
            f"and GoldStandard, got {', '.join(columns) or 'none'}"
        )
    frames, values = [], []
    for line_no, fields in records:
        text = lines[line_no - 1]
        if len(fields) != len(columns):
            raise DatasetError(
                f"{path}:{line_no}: expected {len(columns)} values ({', '.join(columns)}), got {text.strip()!r}"
            )
        time, value = _number(fields[time_col]), _number(fields[value_col])
        if time is None or time < 0 or value is None or abs(value) > 1:
            raise DatasetError(
                f"{path}:{line_no}: expected a time >= 0 (seconds) and a GoldStandard in [-1, 1], got {text.strip()!r}"
            )
        frame = round(time * fps) + 1
        if frames and frame <= frames[-1]:
            raise DatasetError(
                f"{path}:{line_no}: expected increasing times one frame "
                f"(1/{fps:g} s) or more apart, got frame {frame} after "
                f"{frames[-1]}: {text.strip()!r}"
            )
        frames.append(frame)
        values.append(value)
    if not frames:
        raise DatasetError(f"{path}:{len(lines) + 1}: expected rating rows, got none")
    return np.array(frames, np.int64), np.array(values, np.float64)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _arff_records(path: Path, lines: list[str]):
    """(attribute names, line of @data, [(line number, fields)]) of an ARFF file."""
    columns: list[str] = []
    for i, line in enumerate(lines):
        text = line.strip()
        lowered = text.lower()
        if lowered.startswith("@attribute"):
            parts = text.split(None, 2)
            if len(parts) < 3:
                raise DatasetError(f"{path}:{i + 1}: expected '@attribute <name> <type>', got {text!r}")
            columns.append(parts[1].strip("'\""))
        elif lowered.startswith("@data"):
            records = [
                (j + 1, [f.strip().strip("'\"") for f in lines[j].split(",")])
                for j in range(i + 1, len(lines))
                if lines[j].strip() and not lines[j].lstrip().startswith("%")
            ]
            return columns, i + 1, records
    raise DatasetError(
        f"{path}:{len(lines) + 1}: expected an '@data' line after the @attribute declarations, got end of file"
    )


def _csv_records(path: Path, lines: list[str]):
    """(header names, 1, [(line number, fields)]) of a ``,`` or ``;`` separated CSV file."""
    if not lines:
        raise DatasetError(f"{path}:1: expected a header line with a time column and GoldStandard, got an empty file")
    sep = ";" if ";" in lines[0] else ","
    columns = [c.strip() for c in lines[0].split(sep)]
    records = [(j + 1, [f.strip() for f in lines[j].split(sep)]) for j in range(1, len(lines)) if lines[j].strip()]
    return columns, 1, records
