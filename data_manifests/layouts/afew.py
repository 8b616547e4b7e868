"""The AFEW layout of the EmotiW challenge: one emotion label per clip, given by its folder.

On disk (folder names come from the manifest)::

    <root>/Train_AFEW/<Emotion>/<clip>.avi      Emotion: Angry Disgust Fear Happy Neutral Sad Surprise
    <root>/Val_AFEW/<Emotion>/<clip>.avi
    <root>/Test_AFEW/<clip>.avi                 optional: unlabelled (valid False, label -1)

The split folders may sit one level down (an archive that unpacks into its own folder).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from data_manifests.layouts.common import find_dirs, one_dir, row
from data_manifests.schema import LABELS, DatasetError

if TYPE_CHECKING:
    from data_manifests.loader import Manifest

log = logging.getLogger(__name__)

TASK = "clip"


def load(manifest: Manifest, root: Path) -> list[dict]:
    """Rows of the sample table for an AFEW tree (see the module docstring).

    Raises:
        DatasetError: no split folder, a folder that is not one of the 7 emotions, a clip outside
            an emotion folder in a labelled split, or one clip name in two places.
    """
    split_folders = dict(manifest.option("split_folders"))
    test_folder = manifest.option("test_folder", "")
    extensions = {e.lower() for e in manifest.option("extensions")}
    depth = int(manifest.option("search_depth"))
    names = [*split_folders, *([test_folder] if test_folder else [])]
    found = find_dirs(root, names, depth)
    folders = {name: one_dir(found, [name], f"{root}: {name}") for name in names}
    if not any(folders[name] for name in split_folders):
        raise DatasetError(
            f"{root}: no {' or '.join(split_folders)} folder within {depth} levels; "
            f"expected <split>/<Emotion>/<clip>{sorted(extensions)[0]}"
        )
    classes = {name.lower(): i for i, name in enumerate(LABELS[TASK].names)}
    rows, seen = [], {}
    for name, folder in folders.items():
        if folder is None:
            continue
        split = split_folders.get(name, "test")
        for clip, label in _clips(folder, classes, extensions, labelled=name in split_folders):
            if clip.stem in seen:
                raise DatasetError(
                    f"{clip}: clip name {clip.stem!r} is also used by {seen[clip.stem]}; expected unique clip names"
                )
            seen[clip.stem] = clip
            rows.append(
                row(
                    sample_id=clip.stem,
                    video=clip.stem,
                    subject=clip.stem,
                    side="",
                    split=split,
                    task=TASK,
                    media_path=clip,
                    frames_dir=None,
                    frame_index=None,
                    labels=label,
                    valid=label >= 0,
                )
            )
    return rows


def _clips(folder: Path, classes: dict[str, int], extensions: set[str], labelled: bool):
    """(clip path, class index or -1) for every clip of one split folder, sorted."""
    expected = ", ".join(LABELS[TASK].names)
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            label = classes.get(entry.name.lower())
            if label is None:
                raise DatasetError(
                    f"{entry}: unknown emotion folder {entry.name!r}; expected one of "
                    f"{expected} (move other folders out of {folder.name}/)"
                )
            for clip in sorted(entry.iterdir()):
                if clip.is_file() and clip.suffix.lower() in extensions:
                    yield clip, label
                else:
                    log.debug("%s: not a clip, skipped", clip)
        elif entry.suffix.lower() in extensions:
            if labelled:
                raise DatasetError(
                    f"{entry}: clip outside an emotion folder; expected "
                    f"{folder.name}/<Emotion>/{entry.name} with Emotion one of "
                    f"{expected}"
                )
            yield entry, -1
