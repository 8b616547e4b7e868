"""The HDF5 feature cache: the one home of its schema, its writer and its reader.

Layout of ``<CACHE_DIR>/<DATASET>/<BACKBONE>.h5`` (documented in ``docs/cache_format.md``)::

    /                      attrs: format_version, backbone, weights_sha256, input_size,
                                  preprocessing, embedding_dim, face_policy, keras_version,
                                  backend, backend_version, ...
    /videos/<video_id>/    attrs: complete (True once every frame is written), n_frames, source
        embeddings   [T, D] float16
        frame_index  [T]    int32    1-based frame numbers
        face_mask    [T]    bool     False: no face, the embedding row is zeros
        bbox         [T, 4] float32  x0, y0, x1, y1 in source-frame pixels (zeros without a face)
        score        [T]    float32  detector confidence (0 without a face)

Crash safety: HDF5 files are not journaled, so a process killed while it writes can leave a file
that no longer opens. Videos are therefore written one per *shard* file under
``<BACKBONE>.parts/``; a shard is renamed to its final name only after it is closed with
``complete=True``. :func:`merge_shards` folds the finished shards into a copy of the main file and
atomically replaces it. At every instant the main file holds only complete videos, and a run
killed at any point loses at most the videos that were in flight.

Example::

    meta = CacheMeta(backbone="fer", embedding_dim=4, input_size=(64, 64, 1))
    with VideoWriter(parts_dir, "vid1", meta) as w:
        w.append(embeddings, frame_index, face_mask, bbox, score)
    merge_shards(cache_path, parts_dir, meta)
    CacheReader(cache_path).read("vid1").embeddings.shape
    # (T, 4)
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
COMPRESSION = "lzf"
CHUNK_FRAMES = 256
FIELDS = ("embeddings", "frame_index", "face_mask", "bbox", "score")


class CacheError(ValueError):
    """A cache file that cannot be used as asked; the message names the file and the fix."""


@dataclass(frozen=True)
class CacheMeta:
    """File-level attributes: what produced the embeddings, so runs can be reproduced."""

    backbone: str
    embedding_dim: int
    input_size: tuple = ()
    preprocessing: str = ""
    weights_sha256: str = ""
    embedding_layer: str = ""
    face_policy: str = "no face: row kept, face_mask=False, embedding zeros, bbox zeros, score 0"
    detector: str = ""
    keras_version: str = ""
    backend: str = ""
    backend_version: str = ""
    extra: dict = field(default_factory=dict)

    def to_attrs(self) -> dict:
        attrs = dataclasses.asdict(self)
        attrs["input_size"] = np.asarray(self.input_size, dtype=np.int64)
        attrs["extra"] = json.dumps(self.extra, sort_keys=True)
        attrs["format_version"] = FORMAT_VERSION
        return attrs

    @classmethod
    def from_attrs(cls, attrs) -> "CacheMeta":
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: _plain(v) for k, v in attrs.items() if k in names}
        kwargs["input_size"] = tuple(int(x) for x in np.atleast_1d(attrs.get("input_size", [])))
        kwargs["extra"] = json.loads(attrs.get("extra", "{}"))
        kwargs["embedding_dim"] = int(kwargs["embedding_dim"])
        return cls(**kwargs)


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class VideoFeatures:
    """Everything cached for one video (or one subject of a two-subject video)."""

    video_id: str
    embeddings: np.ndarray
    frame_index: np.ndarray
    face_mask: np.ndarray
    bbox: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return int(self.frame_index.shape[0])


def open_h5(path, mode: str) -> h5py.File:
    """``h5py.File`` without HDF5's own file lock: that ``flock`` is inherited by any process forked
    while the file is open (a worker pool starting beside the audio thread), and then refuses the
    next open of the file in this process. ``CacheLock`` keeps one run per cache instead."""
    return h5py.File(path, mode, locking=False)


def audio_cache_name(extractor: str) -> str:
    """The cache name (the ``backbone`` a cache records) of an audio extractor: ``audio-<extractor>``
    (``file:runs/a1/model.keras``: ``audio-file-a1-model``, as :func:`cache_path` names a ``file:`` backbone)."""
    return f"audio-{cache_path('', '', extractor).stem if extractor.startswith('file:') else extractor}"


def cache_path(cache_dir: str | Path, dataset: str, backbone: str) -> Path:
    """``<cache_dir>/<dataset>/<backbone>.h5``.

    A ``file:`` backbone is named after its folder and stem (``file:runs/ft1/model.keras`` ->
    ``file-ft1-model.h5``), so two fine-tuning runs never share a cache; the weights checksum in
    the file guards the rest.
    """
    if backbone.startswith("file:"):
        model = Path(backbone[len("file:") :])
        safe = "-".join(part for part in ("file", model.parent.name, model.stem) if part)
    else:
        safe = backbone.replace("/", "_").replace("\\", "_")
    return Path(cache_dir) / dataset / f"{safe}.h5"


def summary_path(path: str | Path) -> Path:
    """The last extraction run's summary (speed, counts, failures) sits beside the cache as JSON."""
    path = Path(path)
    return path.with_name(path.stem + ".extract.json")


def parts_dir_for(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".parts")


class CacheLock:
    """One extraction run owns a cache (and its sibling crops file) at a time.

    An exclusive ``flock`` on ``<cache>.lock``, which holds the owner's pid, taken before anything
    is merged or written and released when the run ends (the kernel releases it if the run is
    killed). A second run refuses at once with one line naming that pid, so two runs never share
    shard names and a start-up merge never folds in what a live run is writing.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "fer.h5"
    >>> with CacheLock(path):
    ...     CacheLock(path).__enter__()
    Traceback (most recent call last):
    extract.cache.CacheError: ... is being written by another extraction (pid ...); wait for it to finish ...
    """

    def __init__(self, path: str | Path):
        self.cache = Path(path)
        self.path = self.cache.with_name(self.cache.name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> "CacheLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise CacheError(
                f"{self.path}: cannot create the cache's lock file ({err.strerror}); "
                f"make CACHE_DIR writable or choose another one"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise CacheError(
                f"{self.cache}: is being written by another extraction (pid {holder}); wait for it to "
                f"finish and run the same command again, or use another CACHE_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


SPACE_MARGIN = 4 * 2**20  # HDF5 must never meet a full disk mid-write: it can crash instead of raising


def ensure_space(path: Path, need: int) -> None:
    """Refuses, before writing, when the file system of ``path`` lacks ``need`` bytes (plus a margin).

    Finished videos (the main file and closed shards) are never touched by this error.
    """
    folder = Path(path).parent
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    if free < need + SPACE_MARGIN:
        raise CacheError(
            f"{folder}: no space left for the cache ({free / 2**20:.1f} MiB free, about "
            f"{(need + SPACE_MARGIN) / 2**20:.1f} MiB needed); the videos already finished are kept: free "
            f"some space (or choose another CACHE_DIR) and run the same command again to continue"
        )


def _shard_name(video_id: str) -> str:
    # Video ids come from file names; keep the shard name a single path component.
    return video_id.replace("/", "__") + ".h5"


class ShardWriter:
    """One video's group in its own shard file; the shard counts only once closed cleanly.

    Args:
        parts_dir: the shard folder (``parts_dir_for(<the file the shards fold into>)``).
        video_id: the group name under ``/videos``.
        meta: the file attributes; every shard carries them so a merge can check they agree.
        source: the media path or frame folder, stored for the report.
        fingerprint: ``extract.fingerprint.fingerprint(source)``, compared by later runs.

    Subclasses create their datasets in ``self.group`` and append to them; rows can come in any
    number of calls, so no video is ever held whole in memory.
    """

    def __init__(self, parts_dir: str | Path, video_id: str, meta: CacheMeta, source: str = "", fingerprint: str = ""):
        self.parts_dir = Path(parts_dir)
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self.video_id = video_id
        self.meta = meta
        self.final_path = self.parts_dir / _shard_name(video_id)
        self.tmp_path = self.final_path.with_suffix(".h5.partial")
        self._file = open_h5(self.tmp_path, "w")
        self._file.attrs.update(meta.to_attrs())
        self.group = self._file.require_group("videos").create_group(video_id)
        self.group.attrs["complete"] = False
        self.group.attrs["source"] = source
        self.group.attrs["source_fingerprint"] = fingerprint
        self.n = 0

    def close(self) -> Path:
        """Marks the video complete, flushes, and publishes the shard under its final name."""
        self.group.attrs["complete"] = True
        self.group.attrs["n_frames"] = self.n
        self._file.flush()
        self._file.close()
        return _publish(self.tmp_path, self.final_path)

    def abort(self) -> None:
        """Drops the partial shard (a failed video leaves nothing behind)."""
        try:
            self._file.close()
        finally:
            self.tmp_path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class VideoWriter(ShardWriter):
    """Streams one video's rows (:data:`FIELDS`) into its shard (:class:`ShardWriter`)."""

    def __init__(self, parts_dir: str | Path, video_id: str, meta: CacheMeta, source: str = "", fingerprint: str = ""):
        super().__init__(parts_dir, video_id, meta, source, fingerprint)
        dim = meta.embedding_dim
        specs = {
            "embeddings": ((dim,), np.float16),
            "frame_index": ((), np.int32),
            "face_mask": ((), np.bool_),
            "bbox": ((4,), np.float32),
            "score": ((), np.float32),
        }
        self._dsets = {
            name: self.group.create_dataset(
                name,
                shape=(0, *tail),
                maxshape=(None, *tail),
                dtype=dtype,
                chunks=(CHUNK_FRAMES, *tail),
                compression=COMPRESSION,
                fletcher32=True,  # a damaged chunk then fails to read instead of changing values
            )
            for name, (tail, dtype) in specs.items()
        }

    def append(self, embeddings, frame_index, face_mask, bbox, score) -> None:
        rows = {
            "embeddings": np.asarray(embeddings, np.float16),
            "frame_index": np.asarray(frame_index, np.int32),
            "face_mask": np.asarray(face_mask, np.bool_),
            "bbox": np.asarray(bbox, np.float32),
            "score": np.asarray(score, np.float32),
        }
        k = rows["frame_index"].shape[0]
        for name, arr in rows.items():
            if arr.shape[0] != k:
                raise CacheError(f"{self.tmp_path}: '{name}' has {arr.shape[0]} rows, frame_index has {k}")
        if rows["embeddings"].shape[1:] != (self.meta.embedding_dim,):
            raise CacheError(
                f"{self.tmp_path}: embeddings of shape {rows['embeddings'].shape[1:]}, "
                f"expected ({self.meta.embedding_dim},)"
            )
        ensure_space(self.tmp_path, 2 * sum(arr.nbytes for arr in rows.values()))
        for name, arr in rows.items():
            dset = self._dsets[name]
            dset.resize(self.n + k, axis=0)
            dset[self.n : self.n + k] = arr
        self.n += k


def _check_meta(path: Path, have: CacheMeta, want: CacheMeta) -> None:
    keys = ("backbone", "embedding_dim", "input_size", "preprocessing", "weights_sha256", "embedding_layer", "detector")
    diff = [k for k in keys if getattr(have, k) != getattr(want, k)]
    if diff:
        detail = ", ".join(f"{k}: {getattr(have, k)!r} != {getattr(want, k)!r}" for k in diff)
        raise CacheError(
            f"{path}: was written with other settings ({detail}); "
            f"delete it or choose another CACHE_DIR to extract with these settings"
        )


def shard_bytes(parts_dir: str | Path, video_id: str) -> bytes:
    """A finished shard's file, to be published in another folder (:func:`publish_shard`)."""
    return (Path(parts_dir) / _shard_name(video_id)).read_bytes()


def publish_shard(parts_dir: str | Path, video_id: str, data: bytes) -> Path:
    """A shard finished elsewhere (a Ray actor's node), published as :meth:`ShardWriter.close` does:
    written beside its final name, synced, then renamed, so that it counts only once whole."""
    final = Path(parts_dir) / _shard_name(video_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_suffix(".h5.partial")
    ensure_space(tmp, len(data))
    tmp.write_bytes(data)
    return _publish(tmp, final)


def _publish(tmp: Path, final: Path) -> Path:
    """``tmp`` synced to disk, then renamed to ``final``: a shard counts only once it is whole."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


def finished_shards(parts_dir: str | Path) -> list[Path]:
    parts_dir = Path(parts_dir)
    return sorted(parts_dir.glob("*.h5")) if parts_dir.is_dir() else []


def shard_video_ids(parts_dir: str | Path) -> set[str]:
    """The videos complete in finished shards, not yet merged (what the next merge will add)."""
    out = set()
    for shard in finished_shards(parts_dir):
        try:
            with open_h5(shard, "r") as f:
                out |= {v for v, g in f.get("videos", {}).items() if g.attrs.get("complete", False)}
        except OSError:
            continue  # unreadable: merge_shards reports it with its path
    return out


def merge_shards(path: str | Path, parts_dir: str | Path, meta: CacheMeta) -> list[str]:
    """Folds every finished shard into the main file, atomically; returns the merged video ids.

    The main file is copied, extended and swapped in with ``os.replace``, so a kill during the
    merge leaves the old main file and the shards as they were: the next run merges again.
    """
    path, parts_dir = Path(path), Path(parts_dir)
    shards = finished_shards(parts_dir)
    for stale in parts_dir.glob("*.h5.partial") if parts_dir.is_dir() else []:
        stale.unlink()  # a writer killed mid-video; that video is extracted again
    if not shards:
        if path.exists():
            _check_meta(path, CacheReader(path).meta, meta)
        else:
            _write_empty(path, meta)
        return []
    tmp = path.with_name(path.name + ".merging")
    ensure_space(path, (path.stat().st_size if path.exists() else 0) + sum(s.stat().st_size for s in shards))
    if path.exists():
        CacheReader(path)  # refuses a foreign or damaged file before anything is built on it
        shutil.copyfile(path, tmp)
    else:
        _write_empty(tmp, meta)
    merged = []
    with open_h5(tmp, "a") as out:
        _check_meta(path, CacheMeta.from_attrs(out.attrs), meta)
        videos = out.require_group("videos")
        for shard in shards:
            with open_h5(shard, "r") as src:
                _check_meta(shard, CacheMeta.from_attrs(src.attrs), meta)
                for video_id, group in src["videos"].items():
                    if not group.attrs.get("complete", False):
                        continue
                    if video_id in videos:
                        del videos[video_id]
                    src.copy(group, videos, name=video_id)
                    merged.append(video_id)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    for shard in shards:
        shard.unlink()
    return merged


def _write_empty(path: Path, meta: CacheMeta) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    with open_h5(tmp, "w") as f:
        f.attrs.update(meta.to_attrs())
        f.create_group("videos")
    os.replace(tmp, path)


class CacheReader:
    """Reads a cache file; refuses, with the reason and the fix, what it cannot trust.

    Args:
        path: the ``.h5`` file.

    Example::

        reader = CacheReader("cache/synthetic/fer.h5")
        reader.meta.backbone, len(reader.video_ids())
        # ('fer', 24)
        feats = reader.read(reader.video_ids()[0])
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise CacheError(f"{self.path}: no such cache file; run `make extract` first")
        if not h5py.is_hdf5(self.path):
            raise CacheError(f"{self.path}: not an HDF5 file; delete it and run `make extract` again")
        try:
            with open_h5(self.path, "r") as f:
                attrs = dict(f.attrs)
                has_videos = "videos" in f
        except OSError as err:
            raise CacheError(f"{self.path}: unreadable HDF5 ({err}); delete it and run `make extract` again") from err
        version = attrs.get("format_version")
        if version is None or int(version) != FORMAT_VERSION or not has_videos:
            raise CacheError(
                f"{self.path}: cache format version {version}, this code reads version {FORMAT_VERSION}; "
                f"delete the file and run `make extract` again"
            )
        self.meta = CacheMeta.from_attrs(attrs)

    def _open(self) -> h5py.File:
        return open_h5(self.path, "r")

    def video_ids(self, complete_only: bool = True) -> list[str]:
        with self._open() as f:
            return sorted(
                vid for vid, g in f["videos"].items() if not complete_only or bool(g.attrs.get("complete", False))
            )

    def fingerprints(self) -> dict[str, str]:
        """Video id -> the fingerprint of the source it was extracted from (``""``: not recorded)."""
        with self._open() as f:
            return {vid: _plain(g.attrs.get("source_fingerprint", "")) for vid, g in f["videos"].items()}

    def __contains__(self, video_id: str) -> bool:
        return video_id in self.video_ids()

    def info(self) -> dict:
        """Per-file summary: videos, frames, faces found (for reports and logs)."""
        frames = faces = 0
        with self._open() as f:
            groups = [g for g in f["videos"].values() if g.attrs.get("complete", False)]
            for g in groups:
                frames += g["frame_index"].shape[0]
                faces += int(np.count_nonzero(g["face_mask"][()]))
        summary = summary_path(self.path)
        stats = json.loads(summary.read_text()) if summary.is_file() else {}
        return {
            "videos": len(groups),
            "frames": frames,
            "faces": faces,
            "face_hit_rate": faces / frames if frames else 0.0,
            "last_run": stats,
        }

    def read(self, video_id: str, fields: tuple[str, ...] = FIELDS) -> VideoFeatures:
        with self._open() as f:
            if video_id not in f["videos"]:
                raise CacheError(f"{self.path}: no video '{video_id}'; run `make extract` to add it")
            g = f["videos"][video_id]
            if not g.attrs.get("complete", False):
                raise CacheError(
                    f"{self.path}: video '{video_id}' is incomplete (extraction was interrupted); "
                    f"run `make extract` again to finish it"
                )
            try:
                data = {name: g[name][()] if name in fields else None for name in FIELDS}
            except OSError as err:  # fletcher32 or the decompressor found a damaged chunk
                raise CacheError(
                    f"{self.path}: video '{video_id}' is damaged (the HDF5 checksum or decompression failed: "
                    f"{err}); restore the file from a copy, or delete it and run `make extract` again"
                ) from err
        if data["embeddings"] is not None:
            bad = int(np.count_nonzero(~np.isfinite(data["embeddings"])))
            if bad:
                raise CacheError(
                    f"{self.path}: video '{video_id}' holds non-finite embeddings ({bad} values): the "
                    f"backbone overflowed float16 or the file was altered; delete it and run `make extract` again"
                )
        return VideoFeatures(video_id=video_id, **data)

    def iter_videos(self, video_ids: list[str] | None = None) -> Iterator[VideoFeatures]:
        for vid in video_ids if video_ids is not None else self.video_ids():
            yield self.read(vid)
