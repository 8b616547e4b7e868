"""Helpers shared by the layout modules: finding folders and media, reading label files, rows.

Every layout returns a list of row dicts (one per sample and task, keys = ``schema.COLUMNS``);
:func:`data_manifests.loader.load_dataset` turns them into the sample table.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from data_manifests.schema import DatasetError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def find_dirs(root: Path, names: Iterable[str], max_depth: int, prune: Iterable[Path] = ()) -> dict[str, list[Path]]:
    """Find folders with the given names at most ``max_depth`` levels below ``root``.

    Releases nest their folders under names that change between versions ("Annotations",
    "6th ABAW Annotations", ...), so the search goes a few levels down. Only the shallowest
    matches of each name are kept, and a matched folder is not searched further. ``prune`` folders
    (e.g. the frames folder, with hundreds of sub-folders) are not entered.

    Args:
        root: where to start; depth 1 is a direct child of ``root``.
        names: folder names to look for (exact match).
        max_depth: how many levels down to look.
        prune: folders never entered.

    Returns:
        name -> sorted list of the shallowest folders with that name (missing names are absent).

    Example::

        find_dirs(Path("data/affwild2"), ["VA_Estimation_Challenge"], 3)
        # {'VA_Estimation_Challenge': [PosixPath('data/affwild2/Annotations/VA_Estimation_Challenge')]}
    """
    wanted = set(names)
    skip = {Path(p).resolve() for p in prune}
    found: dict[str, list[Path]] = {}
    level = [root]
    for _ in range(max_depth):
        next_level = []
        hits: dict[str, list[Path]] = {}
        for folder in level:
            for child in _subdirs(folder):
                if child.name in wanted and child.name not in found:
                    hits.setdefault(child.name, []).append(child)
                elif child.resolve() not in skip:
                    next_level.append(child)
        for name, paths in hits.items():
            found[name] = sorted(paths)
        level = next_level
        if not level or len(found) == len(wanted):
            break
    return found


def find_files(root: Path, name: str, max_depth: int) -> list[Path]:
    """The shallowest files called ``name`` at most ``max_depth`` folder levels below ``root``.

    Depth 0 is ``root`` itself. Example: ``find_files(root, "data_info.csv", 2)``.
    """
    level = [root]
    for _ in range(max_depth + 1):
        hits = sorted(folder / name for folder in level if (folder / name).is_file())
        if hits:
            return hits
        level = [child for folder in level for child in _subdirs(folder)]
    return []


def _subdirs(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as entries:
            return sorted(Path(e.path) for e in entries if e.is_dir())
    except PermissionError:
        log.warning("%s: not readable, skipped", folder)
        return []


def one_dir(found: Mapping[str, list[Path]], names: Iterable[str], what: str) -> Path | None:
    """The single folder among ``names`` in a :func:`find_dirs` result, or None if none was found.

    Two candidates (two copies, or both the old and the new name of a renamed folder) are an error:
    the labels may differ between releases, and picking one silently could mix them.
    """
    paths = [p for name in names for p in found.get(name, [])]
    if len(paths) > 1:
        raise DatasetError(
            f"{what}: found {len(paths)} folders ({', '.join(map(str, paths))}); "
            f"expected one: keep one release, move the other out of the dataset root"
        )
    return paths[0] if paths else None


def index_media(
    folder: Path, extensions: Iterable[str] = VIDEO_EXTENSIONS, prune: Iterable[Path] = ()
) -> dict[str, Path]:
    """Map file stem -> path for every media file anywhere below ``folder``.

    Releases spread videos over several sub-folders (Aff-Wild2: ``batch1/``, ``batch2/``,
    ``new_vids/``), so the search is recursive. The walk is sorted, so when a stem appears twice the
    first path in sorted order wins, and a warning names both.

    Args:
        folder: where to search.
        extensions: lower-case suffixes that count as media (matched case-insensitively).
        prune: folders not entered (the frames folder holds millions of jpgs).

    Example::

        index_media(Path("data/affwild2/videos"))["10-60-1280x720"]
        # PosixPath('data/affwild2/videos/batch1/10-60-1280x720.mp4')
    """
    suffixes = {e.lower() for e in extensions}
    skip = {Path(p).resolve() for p in prune}
    media: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if (Path(dirpath) / d).resolve() not in skip)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix.lower() not in suffixes:
                continue
            if path.stem in media:
                log.warning("%s: same name as %s; using the first", path, media[path.stem])
                continue
            media[path.stem] = path
    return media


def index_audio(root: Path, name: str | None) -> dict[str, Path]:
    """stem -> WAV file below ``root/name`` (the manifest's ``audio`` path); empty without that folder."""
    folder = root / name if name else None
    return index_media(folder, extensions=(".wav",)) if folder is not None and folder.is_dir() else {}


def media_folder(root: Path, name: str | None) -> Path:
    """The folder to search for raw videos: ``root/name`` when it exists, else ``root`` itself."""
    if name and (root / name).is_dir():
        return root / name
    return root


def strip_lines(text: str) -> list[str]:
    """Lines of a label file without line ends, trailing blank lines removed.

    Blank lines inside the file are kept: there, line i is frame i, and dropping one would shift
    every later frame.
    """
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def read_text(path: Path) -> str:
    """A label file's text (a UTF-8 byte-order mark, if any, removed)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DatasetError(
            f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); expected a plain-text label file"
        ) from err
    except OSError as err:  # a permission problem, a folder under a file's name, an I/O error
        raise DatasetError(f"{path}: cannot be read ({err.strerror}); check that it is a readable file") from err


def parse_floats(path: Path, lines: list[str], first_line: int, width: int, expected: str) -> np.ndarray:
    """Parse comma-separated numeric lines into a float64 ``[N, width]`` array.

    The fast path hands the whole block to numpy; only when that fails is the block scanned line by
    line, to name the first bad line.

    Args:
        path: the file, for messages.
        lines: the data lines.
        first_line: 1-based line number of ``lines[0]`` in the file.
        width: values per line.
        expected: what a line should hold, for messages (e.g. "2 floats valence,arousal").

    Raises:
        DatasetError: ``"<path>:<line>: expected <expected>, got '<text>'"``.
    """
    if not lines:
        return np.zeros((0, width))
    try:
        values = pd.read_csv(
            io.StringIO("\n".join(lines)),
            header=None,
            dtype=np.float64,
            skip_blank_lines=False,
            na_filter=False,
            engine="c",
        ).to_numpy()
    except (ValueError, pd.errors.ParserError):
        values = None
    if values is not None and values.shape == (len(lines), width) and np.isfinite(values).all():
        return values
    rows = []
    for i, line in enumerate(lines):
        fields = line.split(",")
        if len(fields) != width:
            raise bad_line(
                path, first_line + i, f"{expected} ({width} comma-separated values, found {len(fields)})", line
            )
        numbers = []
        for field in fields:
            try:
                number = float(field)
            except ValueError:
                number = float("nan")
            if not np.isfinite(number):
                raise bad_line(path, first_line + i, f"{expected} (numbers only, found {field.strip()!r})", line)
            numbers.append(number)
        rows.append(numbers)
    return np.array(rows, dtype=np.float64)


def _flat(text: str) -> str:
    r"""Line breaks inside quoted fields shown escaped, so an error stays one line.

    >>> _flat('a\nb')
    'a\\nb'
    """
    return text.replace("\r", "\\r").replace("\n", "\\n")


def read_csv_strings(path: Path, required: Iterable[str], sep: str = ",") -> pd.DataFrame:
    """A CSV file as a table of stripped strings; row i of the table is line i + 2 of the file.

    Raises:
        DatasetError: the file is not parseable CSV (pandas names the line), or lacks a column of
            ``required`` (``"<path>:1: expected columns ..."``).
    """
    try:
        table = pd.read_csv(
            path, dtype=str, keep_default_na=False, sep=sep, encoding="utf-8-sig", skip_blank_lines=False
        )
    except pd.errors.EmptyDataError as err:
        raise DatasetError(
            f"{path}:1: expected a header line with columns {','.join(required)}, got an empty file"
        ) from err
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DatasetError(
            f"{path}: not a readable CSV file ({_flat(str(err).strip())}); expected "
            f"{sep!r}-separated columns {','.join(required)}"
        ) from err
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DatasetError(
            f"{path}:1: expected columns {','.join(required)}, missing "
            f"{','.join(missing)} (header: {_flat(','.join(table.columns))})"
        )
    table = table.fillna("").apply(lambda column: column.str.strip())
    filled = np.flatnonzero((table != "").any(axis=1).to_numpy())
    return table.iloc[: filled[-1] + 1 if filled.size else 0]


def read_subjects(path: Path) -> dict[str, str]:
    """An optional ``sample_id,subject`` table (other columns ignored) as sample -> subject.

    Raises:
        DatasetError: a missing column, an empty field, or a sample listed twice
            (``"<path>:<line>: expected ..."``).
    """
    table = read_csv_strings(path, ["sample_id", "subject"])
    subjects: dict[str, str] = {}
    for i, (sample_id, subject) in enumerate(zip(table["sample_id"], table["subject"])):
        if not sample_id or not subject or sample_id in subjects:
            what = "each sample_id listed once" if sample_id in subjects else "a sample_id and a subject"
            raise DatasetError(f"{path}:{i + 2}: expected {what}, got {','.join(table.iloc[i])!r}")
        subjects[sample_id] = subject
    return subjects


def bad_line(path: Path, line_no: int, expected: str, text: str) -> DatasetError:
    """The one-line error for a malformed line: file, line, what was expected, what was found."""
    return DatasetError(f"{path}:{line_no}: expected {expected}, got {text.strip()!r}")


def first_bad(path: Path, lines: list[str], first_line: int, ok: np.ndarray, expected: str) -> None:
    """Raise for the first line whose ``ok`` flag is False (``ok`` is one flag per line)."""
    bad = np.flatnonzero(~ok)
    if bad.size:
        i = int(bad[0])
        raise bad_line(path, first_line + i, expected, lines[i])


def split_side(sample_id: str) -> tuple[str, str]:
    """``'<video>_left'`` -> (``'<video>'``, ``'left'``); other names -> (name, ``''``)."""
    for side in ("left", "right"):
        if sample_id.endswith("_" + side):
            return sample_id[: -len(side) - 1], side
    return sample_id, ""


def row(
    *,
    sample_id: str,
    video: str,
    subject: str,
    side: str,
    split: str,
    task: str,
    media_path: Path | None,
    frames_dir: Path | None,
    frame_index,
    labels,
    valid,
    audio_path: Path | None = None,
) -> dict:
    """One row of the sample table (see ``schema.COLUMNS``); missing paths become ``''``."""
    return {
        "sample_id": sample_id,
        "video": video,
        "subject": subject,
        "side": side,
        "split": split,
        "task": task,
        "media_path": str(media_path) if media_path else "",
        "frames_dir": str(frames_dir) if frames_dir else "",
        "audio_path": str(audio_path) if audio_path else "",
        "frame_index": frame_index,
        "labels": labels,
        "valid": valid,
    }
