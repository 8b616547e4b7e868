"""Face crops saved during extraction (``make extract ... SAVE_CROPS=1``): the sibling HDF5 file.

Fine-tuning (``finetune/``) needs face crops with frame labels. Datasets with ``cropped_aligned``
folders have them; for raw videos, stage one already finds and cuts every face, so it can store
them once and fine-tuning never runs detection again. Layout of
``<CACHE_DIR>/<DATASET>/<BACKBONE>.crops.h5`` (beside the feature cache, documented in
``docs/cache_format.md``)::

    /                      attrs: as the feature cache (CacheMeta), with embedding_dim 0,
                                  input_size (S, S, 3) and preprocessing "jpeg quality Q, RGB"
    /videos/<video_id>/    attrs: complete, n_frames (crops), source
        jpeg         [N]    vlen uint8  one JPEG per frame with a face, in frame order
        frame_index  [N]    int32       the 1-based frame number of each crop

Crops are square, cut around the same box with the same margin (and alignment) as the backbone's
input, at ``S`` x ``S`` pixels (112 by default, the size of Aff-Wild2's ``cropped_aligned``).
They are written like the feature cache: one shard per video under ``<BACKBONE>.crops.parts/``,
folded in atomically by :func:`extract.cache.merge_shards`.

Example::

    store = CropStore("cache/affwild2/fer.crops.h5")
    frames = store.frames("video1")            # frame numbers that have a crop
    store.image("video1", 0).shape             # the first of them, RGB
    # (112, 112, 3)
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import cv2
import h5py
import numpy as np

from extract.cache import CacheError, CacheMeta, CacheReader, ShardWriter, ensure_space, open_h5

DEFAULT_CROP_SIZE = 112
JPEG_QUALITY = 90


def crops_path(cache_file: str | Path) -> Path:
    """``<backbone>.h5`` -> ``<backbone>.crops.h5``."""
    cache_file = Path(cache_file)
    return cache_file.with_name(cache_file.stem + ".crops.h5")


def crops_meta(meta: CacheMeta, size: int) -> CacheMeta:
    """The crops file's attributes: the feature cache's, with the crop size and encoding."""
    return dataclasses.replace(
        meta, embedding_dim=0, input_size=(size, size, 3), preprocessing=f"jpeg quality {JPEG_QUALITY}, RGB"
    )


def encode_jpeg(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 image -> JPEG bytes as a uint8 array."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"could not JPEG-encode a crop of shape {rgb.shape}")
    return data.ravel()


def decode_jpeg(data: np.ndarray, where: str) -> np.ndarray:
    """JPEG bytes -> RGB uint8; ``where`` names the crop in the error."""
    bgr = cv2.imdecode(np.asarray(data, np.uint8), cv2.IMREAD_COLOR) if len(data) else None
    if bgr is None:
        raise CacheError(f"{where}: not a decodable JPEG; delete the crops file and extract again with SAVE_CROPS=1")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class CropWriter(ShardWriter):
    """Streams one video's crops into its shard, as :class:`extract.cache.VideoWriter` does rows.

    Args:
        parts_dir: the shard folder (``parts_dir_for(crops_path(cache file))``).
        video_id: the group name under ``/videos``.
        meta: the crops file's attributes (:func:`crops_meta`).
        source: the media path, stored for reference.
    """

    def __init__(self, parts_dir: str | Path, video_id: str, meta: CacheMeta, source: str = ""):
        super().__init__(parts_dir, video_id, meta, source)
        self._jpeg = self.group.create_dataset(
            "jpeg", shape=(0,), maxshape=(None,), chunks=(256,), dtype=h5py.vlen_dtype(np.uint8)
        )
        self._frames = self.group.create_dataset(
            "frame_index", shape=(0,), maxshape=(None,), chunks=(256,), dtype=np.int32, fletcher32=True
        )

    def append(self, frame_index, jpegs) -> None:
        """Adds crops (``jpegs``: uint8 arrays of JPEG bytes) of the frames ``frame_index``."""
        frame_index = np.asarray(frame_index, np.int32).reshape(-1)
        if len(jpegs) != len(frame_index):
            raise CacheError(f"{self.tmp_path}: {len(jpegs)} crops for {len(frame_index)} frames")
        k = len(frame_index)
        if not k:
            return
        ensure_space(self.tmp_path, 2 * (sum(len(j) for j in jpegs) + frame_index.nbytes))
        self._jpeg.resize(self.n + k, axis=0)
        self._frames.resize(self.n + k, axis=0)
        # An object array of 1-D arrays (a plain np.array of equal-length ones would be 2-D).
        self._jpeg[self.n : self.n + k] = np.array(list(jpegs) + [None], dtype=object)[:k]
        self._frames[self.n : self.n + k] = frame_index
        self.n += k


class CropStore:
    """Reads the crops file; safe to share between reader threads (h5py serialises the reads).

    Args:
        path: the ``.crops.h5`` file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta = CacheReader(self.path).meta  # refuses a missing, foreign or damaged file
        if self.meta.embedding_dim != 0 or len(self.meta.input_size) != 3:
            raise CacheError(
                f"{self.path}: a feature cache, not a crops file; pass the .crops.h5 file "
                f"that make extract SAVE_CROPS=1 writes"
            )
        self._lock = threading.Lock()
        self._file: h5py.File | None = None
        self._frames: dict[str, np.ndarray] = {}

    def _open(self) -> h5py.File:
        if self._file is None:
            self._file = open_h5(self.path, "r")
        return self._file

    def video_ids(self) -> list[str]:
        with self._lock:
            videos = self._open()["videos"]
            return sorted(v for v, g in videos.items() if g.attrs.get("complete", False))

    def frames(self, video_id: str) -> np.ndarray:
        """Frame numbers of the video's crops, in order (the row of a crop is its position here)."""
        if video_id not in self._frames:
            with self._lock:
                videos = self._open()["videos"]
                if video_id not in videos or not videos[video_id].attrs.get("complete", False):
                    raise CacheError(
                        f"{self.path}: no crops of '{video_id}'; run make extract with "
                        f"SAVE_CROPS=1 (INPUT=video) to add them"
                    )
                self._frames[video_id] = videos[video_id]["frame_index"][()]
        return self._frames[video_id]

    def image(self, video_id: str, row: int) -> np.ndarray:
        """The crop at ``row`` of the video, RGB uint8 ``[S, S, 3]``."""
        with self._lock:
            data = self._open()["videos"][video_id]["jpeg"][row]
        return decode_jpeg(data, f"{self.path}: {video_id} crop {row}")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
