"""The one dataset loader: a declarative manifest (``<name>.toml``) + a layout -> the sample table.

Each dataset is one ``data_manifests/<name>.toml`` (registered by being there); its ``layout``
names the module of :mod:`data_manifests.layouts` that reads the files. The table has one row per
(sample, task) and exactly the columns of :data:`data_manifests.schema.COLUMNS`.

Example::

    from data_manifests.loader import DATASETS, load_dataset, samples
    table = load_dataset("synthetic", "data/synthetic")
    table.groupby(["task", "split"]).size()
    samples(table)[["sample_id", "media_path", "frames_dir", "n_frames"]]
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from data_manifests.layouts import LAYOUTS
from data_manifests.schema import COLUMNS, LABELS, SPLITS, DatasetError

MANIFEST_DIR = Path(__file__).resolve().parent
DATASETS: tuple[str, ...] = tuple(sorted(p.stem for p in MANIFEST_DIR.glob("*.toml")))
INPUT_MODES = ("frames", "video")
SAMPLE_COLUMNS = ("sample_id", "video", "subject", "side", "media_path", "frames_dir", "audio_path")

_KEYS = {
    "name": str,
    "layout": str,
    "input": str,
    "description": str,
    "tasks": list,
    "hint": str,
    "base": str,
    "paths": dict,
    "options": dict,
}
_REQUIRED = ("name", "layout", "input", "description", "tasks", "paths")
_MISSING = object()


@dataclass(frozen=True)
class Manifest:
    """One dataset's declarative description, parsed from ``data_manifests/<name>.toml``.

    Args:
        name: registry name (the file stem).
        layout: key of :data:`data_manifests.layouts.LAYOUTS`: how the files are read.
        input: default extraction input, ``frames`` (pre-cropped jpgs) or ``video`` (raw media).
        description: one line for ``--help`` and reports.
        tasks: keys of ``schema.LABELS`` this dataset labels, in table order.
        paths: named locations relative to the dataset root (layout-specific keys).
        options: layout-specific settings (folder names, split lists, fps, ...).
        hint: how to obtain the dataset, appended to "root not found" errors.
        source: the ``.toml`` file, for messages.

    Example:

    >>> load_manifest("affwild2").tasks
    ('va', 'expr', 'au')
    """

    name: str
    layout: str
    input: str
    description: str
    tasks: tuple[str, ...]
    paths: Mapping[str, str]
    options: Mapping[str, Any]
    hint: str
    source: Path

    def path(self, key: str) -> str:
        """``paths[key]``; a missing key is a DatasetError naming the file."""
        if key not in self.paths:
            raise DatasetError(f"{self.source}: [paths] lacks {key!r}, which the {self.layout} layout needs")
        return self.paths[key]

    def option(self, key: str, default: Any = _MISSING) -> Any:
        """``options[key]``; without a default, a missing key is a DatasetError naming the file."""
        if key in self.options:
            return self.options[key]
        if default is _MISSING:
            raise DatasetError(f"{self.source}: [options] lacks {key!r}, which the {self.layout} layout needs")
        return default


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise DatasetError(
            f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)} (one data_manifests/<name>.toml each)"
        )


@functools.lru_cache(maxsize=None)
def load_manifest(name: str) -> Manifest:
    """The parsed manifest of a registered dataset.

    Raises:
        DatasetError: an unknown name (the message lists the valid ones) or a malformed ``.toml``.

    Example:

    >>> load_manifest("afew").input
    'video'
    """
    _check_name(name)
    return read_manifest(MANIFEST_DIR / f"{name}.toml")


def read_manifest(path: str | Path) -> Manifest:
    """Parse and check one manifest file (``base = "<name>"`` inherits another manifest's keys).

    Raises:
        DatasetError: ``"<file>:<line>: ..."`` for TOML syntax, an unknown or missing key, a wrong
            type, an unknown layout, input mode or task.
    """
    path = Path(path)
    raw = _read_toml(path)
    if "base" in raw:
        base_name = raw["base"]
        if base_name not in DATASETS or base_name == path.stem:
            raise _key_error(path, "base", f"the name of another manifest ({', '.join(DATASETS)}), got {base_name!r}")
        base = _read_toml(MANIFEST_DIR / f"{base_name}.toml")
        if "base" in base:
            raise _key_error(path, "base", f"a manifest without a base of its own, got {base_name!r} (which has one)")
        raw = {
            **base,
            **raw,
            "paths": {**base.get("paths", {}), **raw.get("paths", {})},
            "options": {**base.get("options", {}), **raw.get("options", {})},
        }
    for key, value in raw.items():
        if key not in _KEYS:
            raise _key_error(path, key, f"one of the keys {', '.join(_KEYS)}, got {key!r}")
        if not isinstance(value, _KEYS[key]):
            raise _key_error(path, key, f"{key} to be a {_KEYS[key].__name__}, got {type(value).__name__}")
    for key in _REQUIRED:
        if key not in raw:
            raise DatasetError(f"{path}: expected a {key!r} key ({', '.join(_REQUIRED)} are required)")
    checks = [
        ("name", raw["name"] == path.stem, f"name = {path.stem!r} (the file name)"),
        ("layout", raw["layout"] in LAYOUTS, f"layout one of {', '.join(LAYOUTS)}"),
        ("input", raw["input"] in INPUT_MODES, f"input one of {', '.join(INPUT_MODES)}"),
        (
            "tasks",
            bool(raw["tasks"]) and all(t in LABELS for t in raw["tasks"]),
            f"tasks a non-empty list of {', '.join(LABELS)}",
        ),
        (
            "paths",
            all(isinstance(v, str) for v in raw["paths"].values()),
            "paths to map names to folder/file names (strings)",
        ),
    ]
    for key, ok, expected in checks:
        if not ok:
            raise _key_error(path, key, f"{expected}, got {raw[key]!r}")
    return Manifest(
        name=raw["name"],
        layout=raw["layout"],
        input=raw["input"],
        description=raw["description"],
        tasks=tuple(raw["tasks"]),
        paths=MappingProxyType(dict(raw["paths"])),
        options=_freeze(raw.get("options", {})),
        hint=raw.get("hint", ""),
        source=path,
    )


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as err:
        raise DatasetError(f"{path}: manifest not found") from err
    except tomllib.TOMLDecodeError as err:
        raise DatasetError(f"{path}: invalid TOML: {err}") from err
    except UnicodeDecodeError as err:
        raise DatasetError(
            f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); a manifest is a UTF-8 TOML file"
        ) from err


def _key_error(path: Path, key: str, expected: str) -> DatasetError:
    """``"<file>:<line>: expected ..."``, the line being where ``key`` is set (tomllib keeps none)."""
    pattern = re.compile(rf"^\s*(\[\s*{re.escape(key)}\s*\]|{re.escape(key)}\s*=)")
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    line = next((i + 1 for i, text in enumerate(lines) if pattern.match(text)), None)
    where = f"{path}:{line}" if line else str(path)
    return DatasetError(f"{where}: expected {expected}")


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def load_dataset(name: str, root: str | Path) -> pd.DataFrame:
    """Read a dataset from disk into the sample table.

    Args:
        name: a registered dataset (one of :data:`DATASETS`).
        root: the dataset's root folder.

    Returns:
        One row per (sample, task), columns exactly ``schema.COLUMNS``, sorted by sample then task
        (manifest order), with a fresh RangeIndex. ``table.attrs`` holds ``dataset``, ``layout``,
        ``input`` (the manifest's default extraction input) and ``root``.

    Raises:
        DatasetError: an unknown name (listing the valid ones), a missing root, no labelled sample,
            or a malformed file (file, line and what was expected).

    Example::

        table = load_dataset("affwild2", "data/affwild2")
        expr = table[table.task == "expr"]
        expr.labels.iloc[0][expr.valid.iloc[0]]  # class per annotated frame
    """
    manifest = load_manifest(name)
    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "not found"
        hint = f"; {manifest.hint}" if manifest.hint else ""
        raise DatasetError(
            f"{root}: dataset root {what}; expected the {name} tree described in docs/datasets.md (set DATA_ROOT){hint}"
        )
    rows = [r for r in LAYOUTS[manifest.layout](manifest, root) if r["task"] in manifest.tasks]
    if not rows:
        raise DatasetError(
            f"{root}: no labelled samples found; expected the {manifest.layout} layout described in docs/datasets.md"
        )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    unknown = sorted(set(table["split"]) - set(SPLITS))
    if unknown:
        raise DatasetError(
            f"{manifest.source}: split {unknown[0]!r} is not one of "
            f"{', '.join(SPLITS)}; expected the manifest to map its folders and "
            f"lists onto those"
        )
    order = {task: i for i, task in enumerate(manifest.tasks)}
    table = (
        table.assign(_order=table["task"].map(order))
        .sort_values(["sample_id", "_order"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )
    duplicated = table.duplicated(["sample_id", "task"])
    if duplicated.any():
        first = table[duplicated].iloc[0]
        raise DatasetError(
            f"{root}: sample {first.sample_id!r} appears twice for task {first.task!r}; expected unique sample names"
        )
    table.attrs.update(dataset=name, layout=manifest.layout, input=manifest.input, root=str(root))
    return table


def samples(table: pd.DataFrame) -> pd.DataFrame:
    """One row per sample: what extraction has to process.

    Args:
        table: a sample table from :func:`load_dataset`.

    Returns:
        Columns sample_id, video, subject, side, media_path, frames_dir, audio_path, n_frames (the largest
        labelled frame number across the sample's tasks; 0 for clip-level datasets), sorted by
        sample_id.

    Example::

        todo = samples(load_dataset("synthetic", "data/synthetic"))
        todo[["sample_id", "frames_dir", "n_frames"]]
    """
    last = table["frame_index"].map(lambda f: int(np.max(f)) if f is not None and len(f) else 0)
    per_sample = (
        table[list(SAMPLE_COLUMNS)]
        .assign(n_frames=last)
        .groupby("sample_id", sort=True, as_index=False)
        .agg({**{c: "first" for c in SAMPLE_COLUMNS[1:]}, "n_frames": "max"})
    )
    per_sample["n_frames"] = per_sample["n_frames"].astype(np.int64)
    return per_sample[[*SAMPLE_COLUMNS, "n_frames"]]
