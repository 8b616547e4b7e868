"""The official Aff-Wild2 layout of the ABAW 3-6 challenges (also used by the synthetic dataset).

On disk (folder names come from the manifest)::

    <root>/cropped_aligned/<sample>/00001.jpg ...    1-based; a frame whose face was lost has no jpg
    <root>/<videos>/**/<video>.mp4|.avi              anywhere below; the whole root if no <videos>/
    <root>/**/VA_Estimation_Challenge/Train_Set/<sample>.txt, Validation_Set/<sample>.txt
    <root>/**/EXPR_Classification_Challenge/...      (ABAW6: EXPR_Recognition_Challenge)
    <root>/**/AU_Detection_Challenge/...

A label file has a header line, then line i is the label of frame i. ``<video>_left.txt`` and
``<video>_right.txt`` are two people in one video ``<video>``: two samples, one media file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from data_manifests.layouts.common import (
    find_dirs,
    first_bad,
    index_audio,
    index_media,
    media_folder,
    one_dir,
    parse_floats,
    read_subjects,
    read_text,
    row,
    split_side,
    strip_lines,
)
from data_manifests.schema import LABELS, DatasetError

if TYPE_CHECKING:
    from data_manifests.loader import Manifest

log = logging.getLogger(__name__)

# What a data line holds, per task, for the messages of malformed lines.
EXPECTED = {
    "va": "valence,arousal floats in [-1, 1] (or -5 = unannotated)",
    "expr": "one integer class in 0..7 (or -1 = ignore)",
    "au": "12 AU values, each 0 or 1 (or -1 = ignore)",
}


def header(task: str) -> str:
    """The exact header line of a task's label files (e.g. ``valence,arousal``)."""
    return ",".join(LABELS[task].names)


def parse_label_file(path: Path, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one annotation file of the Aff-Wild2 challenges.

    Args:
        path: ``<sample>.txt``.
        task: ``va``, ``expr`` or ``au``.

    Returns:
        ``(frame_index int32 [N], labels, valid bool [N])``: frame i is line i after the header;
        labels are float32 ``[N, 2]`` (va), int64 ``[N]`` (expr) or float32 ``[N, 12]`` (au); valid is
        False where the line holds the invalid marker (-5 for VA, -1 otherwise).

    Raises:
        DatasetError: ``"<path>:<line>: expected ..."`` for a wrong header, column count, a value
            that is not a number, or a value out of range.

    Example::

        frame_index, labels, valid = parse_label_file(Path("Train_Set/video1.txt"), "va")
    """
    spec = LABELS[task]
    lines = strip_lines(read_text(path))
    want = header(task)
    got = lines[0] if lines else ""
    if [f.strip() for f in got.split(",")] != list(spec.names):
        raise DatasetError(f"{path}:1: expected header {want!r}, got {got.strip()!r}")
    body = lines[1:]
    if not body:
        raise DatasetError(f"{path}:2: expected one label line per frame after the header, got none")
    width = 1 if spec.kind == "class" else len(spec.names)
    values = parse_floats(path, body, 2, width, EXPECTED[task])
    invalid = spec.invalid
    if task == "va":
        ok = ((np.abs(values) <= 1) | (values == invalid)).all(axis=1)
    elif task == "expr":
        ok = ((values == np.round(values)) & (values >= -1) & (values < len(spec.names))).all(axis=1)
    else:
        ok = np.isin(values, (-1, 0, 1)).all(axis=1)
    first_bad(path, body, 2, ok, EXPECTED[task])
    valid = (values != invalid).all(axis=1)
    frame_index = np.arange(1, len(body) + 1, dtype=np.int32)
    if spec.kind == "class":
        return frame_index, values[:, 0].astype(np.int64), valid
    return frame_index, values.astype(np.float32), valid


def load(manifest: Manifest, root: Path) -> list[dict]:
    """Rows of the sample table for an Aff-Wild2-layout tree (see the module docstring).

    Raises:
        DatasetError: no challenge folder found, a renamed folder present under both names, a task
            folder without split folders, a sample listed twice for one task, or a malformed file.
    """
    frames_root = root / manifest.path("frames")
    if not frames_root.is_dir():
        log.warning("%s: no frames folder; frames_dir stays empty (extract from the videos)", frames_root)
    task_folders = manifest.option("task_folders")
    split_folders = manifest.option("split_folders")
    depth = int(manifest.option("annotation_depth"))
    for task in manifest.tasks:
        if task not in task_folders:
            raise DatasetError(
                f"{manifest.source}: [options.task_folders] lacks {task!r}; "
                f"expected a list of annotation folder names for each task"
            )
    names = [n for task in manifest.tasks for n in task_folders[task]]
    found = find_dirs(root, names, depth, prune=[frames_root])
    annotations = {}
    for task in manifest.tasks:
        folder = one_dir(found, task_folders[task], f"{root}: {task} annotations")
        if folder is None:
            log.warning(
                "%s: no %s folder within %d levels; task %s skipped", root, " or ".join(task_folders[task]), depth, task
            )
        else:
            annotations[task] = folder
    if not annotations:
        raise DatasetError(
            f"{root}: no annotation folder found within {depth} levels; expected "
            f"{', '.join(names)} (each with {'/, '.join(split_folders)}/)"
        )
    videos_dir = media_folder(root, manifest.paths.get("videos"))
    media = index_media(videos_dir, prune=[frames_root, *annotations.values()])
    rows = []
    for task, folder in annotations.items():
        rows.extend(_task_rows(task, folder, split_folders, frames_root, media))
    audio = index_audio(root, manifest.paths.get("audio"))
    for r in rows:
        r["audio_path"] = str(audio[r["video"]]) if r["video"] in audio else ""
    _set_subjects(rows, root, manifest.paths.get("subjects"))
    missing = sorted({r["video"] for r in rows if not r["media_path"]})
    if missing:
        log.info(
            "%s: %d of %d videos have no raw video file (e.g. %s)",
            videos_dir,
            len(missing),
            len({r["video"] for r in rows}),
            missing[0],
        )
    return rows


def _set_subjects(rows: list[dict], root: Path, name: str | None) -> None:
    """Aff-Wild2 ships no subject ids: each sample is its own subject unless a subjects table
    (``paths.subjects``, e.g. written by the synthetic generator) names them."""
    path = root / name if name else None
    if path is None or not path.is_file():
        return
    subjects = read_subjects(path)
    unknown = sorted({r["sample_id"] for r in rows} - set(subjects))
    if unknown:
        log.warning("%s: %d samples not listed (e.g. %s); each stays its own subject", path, len(unknown), unknown[0])
    for r in rows:
        r["subject"] = subjects.get(r["sample_id"], r["sample_id"])


def _task_rows(task: str, folder: Path, split_folders, frames_root: Path, media: dict[str, Path]) -> list[dict]:
    present = {name: split for name, split in split_folders.items() if (folder / name).is_dir()}
    if not present:
        raise DatasetError(
            f"{folder}: expected sub-folders {'/ and '.join(split_folders)}/ of <video>.txt files, found none"
        )
    rows, seen = [], {}
    for name, split in present.items():
        for path in sorted((folder / name).glob("*.txt")):
            sample_id = path.stem
            if sample_id in seen:
                raise DatasetError(
                    f"{path}: sample {sample_id!r} is also in {seen[sample_id]}; "
                    f"expected each sample in one split per task"
                )
            seen[sample_id] = path
            video, side = split_side(sample_id)
            frame_index, labels, valid = parse_label_file(path, task)
            frames_dir = frames_root / sample_id
            rows.append(
                row(
                    sample_id=sample_id,
                    video=video,
                    subject=sample_id,
                    side=side,
                    split=split,
                    task=task,
                    media_path=media.get(video),
                    frames_dir=frames_dir if frames_dir.is_dir() else None,
                    frame_index=frame_index,
                    labels=labels,
                    valid=valid,
                )
            )
    return rows
