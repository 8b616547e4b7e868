"""Stage two beyond RAM: a split whose embeddings exceed the memory budget (``--max-ram-gb``) is not
read into memory; :class:`CachedEmbeddings` stands for ``SplitData.x`` and reads each window from the
HDF5 cache when a batch asks for it.

The windows, their order and the batches are those of the in-RAM path (the same ``WindowDataset``
draws them from the same seed); only where the rows come from changes. A window never crosses two
samples, so it is one contiguous slice of one video's ``embeddings``: one read, in the video's chunk
order. Memory holds the frame numbers and face masks (5 bytes a frame) and one batch.

Example::

    x = CachedEmbeddings(reader.path, split.sample_ids, split.offsets, dim=2048)
    x[rows].shape        # rows: int [B, T] split rows; row N is the zero padding row
    # (B, T, 2048)
"""

from __future__ import annotations

import numpy as np

from extract.cache import CacheError, open_h5

# --max-ram-gb's default: a split of more float16 embeddings than this streams from the cache.
DEFAULT_MAX_RAM_GB = 8.0


class CachedEmbeddings:
    """``SplitData.x`` (float16 ``[N + 1, D]``, row ``N`` zeros) read from the cache on demand.

    Args:
        path: the HDF5 cache. sample_ids: its groups, in split order. offsets: ``[S + 1]`` first row
            of each sample. dim: the embedding size.
    """

    def __init__(self, path, sample_ids: list[str], offsets: np.ndarray, dim: int):
        self.path = path
        self.sample_ids = list(sample_ids)
        self.offsets = np.asarray(offsets, np.int64)
        self.shape = (int(self.offsets[-1]) + 1, int(dim))
        self.dtype = np.dtype(np.float16)
        self._file = None

    def _embeddings(self, sample: int):
        if self._file is None:
            self._file = open_h5(self.path, "r")
        return self._file["videos"][self.sample_ids[sample]]["embeddings"]

    def _read(self, sample: int, lo: int, hi: int) -> np.ndarray:
        try:
            block = self._embeddings(sample)[lo:hi]
        except OSError as err:  # fletcher32 or the decompressor found a damaged chunk
            raise CacheError(
                f"{self.path}: video '{self.sample_ids[sample]}' is damaged ({err}); restore the file or extract again"
            ) from err
        if not np.isfinite(block).all():
            raise CacheError(
                f"{self.path}: video '{self.sample_ids[sample]}' holds non-finite embeddings; extract it again"
            )
        return block

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        windows = rows.reshape(-1, rows.shape[-1]) if rows.ndim > 1 else rows[None]
        out = np.zeros((*windows.shape, self.shape[1]), np.float16)
        padding = self.shape[0] - 1
        for w, window in enumerate(windows):
            real = window < padding
            if not real.any():
                continue
            sample = int(np.searchsorted(self.offsets, window[real][0], side="right") - 1)
            local = window[real] - self.offsets[sample]
            lo = int(local.min())
            out[w, real] = self._read(sample, lo, int(local.max()) + 1)[local - lo]
        return out.reshape(*rows.shape, self.shape[1])

    def face_moments(self, face: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Mean, variance (float64) and count of the rows where ``face`` is True: two passes over the cache."""
        total, count = np.zeros(self.shape[1]), 0
        for s, (lo, hi) in enumerate(zip(self.offsets[:-1], self.offsets[1:])):
            mask = face[lo:hi]
            if mask.any():
                total += self._read(s, 0, hi - lo)[mask].sum(axis=0, dtype=np.float64)
                count += int(mask.sum())
        mean = total / max(count, 1)
        squares = np.zeros(self.shape[1])
        for s, (lo, hi) in enumerate(zip(self.offsets[:-1], self.offsets[1:])):
            mask = face[lo:hi]
            if mask.any():
                squares += ((self._read(s, 0, hi - lo)[mask].astype(np.float64) - mean) ** 2).sum(axis=0)
        return mean, squares / max(count, 1), count

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
