"""Stage two beyond RAM: a split over --max-ram-gb reads its windows from the real HDF5 cache. The rows,
the normalisation statistics and a whole training run equal the in-RAM path's."""

import json

import numpy as np
import pytest

from core.tasks import TASKS
from extract.cache import CacheError, CacheReader
from tests.train_helpers import TINY, random_dataset
from train.config import TrainConfig
from train.data import embedding_stats, load_split
from train.run import run_training
from train.streaming import CachedEmbeddings
from train.windows import WindowDataset, tiling_windows, train_windows, window_rows


@pytest.fixture()
def both(tmp_path):
    path, table = random_dataset(tmp_path / "cache", "va", n_videos=5, n_val=0, dim=12)
    rows = table[table.split == "train"]
    in_ram, info_ram = load_split(CacheReader(path), rows, TASKS["va"])
    streamed, info = load_split(CacheReader(path), rows, TASKS["va"], max_ram_gb=1e-9)
    return path, in_ram, streamed, info_ram, info


def test_streamed_rows_equal_the_in_ram_rows(both):
    _, in_ram, streamed, info_ram, info = both
    assert isinstance(streamed.x, CachedEmbeddings) and isinstance(in_ram.x, np.ndarray)
    assert (info["streamed"], info_ram["streamed"]) == (True, False) and streamed.x.shape == in_ram.x.shape
    # Training windows, prediction windows (their padding rows point at the zero row N), and batches.
    sample, start = train_windows(in_ram, 16, 8)
    tile_sample, tile_start, _ = tiling_windows(in_ram.lengths, 16)
    for s, t in ((sample, start), (tile_sample, tile_start)):
        rows = window_rows(in_ram, s, t, 16)
        np.testing.assert_array_equal(streamed.x[rows], in_ram.x[rows])
    a = WindowDataset(in_ram, sample, start, 16, 8, shuffle_seed=3)
    b = WindowDataset(streamed, sample, start, 16, 8, shuffle_seed=3)
    for i in (0, len(a) - 1):
        (xa, ya), (xb, yb) = a[i], b[i]
        np.testing.assert_array_equal(xa["embeddings"], xb["embeddings"])
        np.testing.assert_array_equal(ya, yb)


def test_streamed_statistics_equal_the_in_ram_ones(both):
    _, in_ram, streamed, _, _ = both
    for got, want in zip(embedding_stats(streamed), embedding_stats(in_ram)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_a_damaged_or_altered_cache_is_named(both):
    import h5py

    path, in_ram, streamed, _, _ = both
    video = in_ram.sample_ids[0]
    with h5py.File(path, "a") as f:
        f["videos"][video]["embeddings"][0, 0] = np.inf
    with pytest.raises(CacheError, match=f"video '{video}' holds non-finite embeddings"):
        streamed.x[np.arange(4)[None]]


@pytest.mark.slow
def test_a_streamed_run_trains_like_an_in_ram_run(tmp_path):
    _, table = random_dataset(tmp_path / "cache", "va", n_videos=6, n_val=2, dim=8)
    runs = {}
    for name, budget in (("ram", 8.0), ("stream", 1e-9)):
        cfg = TrainConfig(
            cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / name), task="va", max_ram_gb=budget, **TINY
        )
        runs[name] = run_training(cfg, table=table)
    config = json.loads((runs["stream"] / "config.json").read_text())
    assert config["data"]["train"]["streamed"] and config["data"]["validation"]["streamed"]
    ram, stream = ((runs[k] / "predictions_validation.csv").read_bytes() for k in ("ram", "stream"))
    assert ram == stream  # TensorFlow on the CPU: the same batches give the same run, bit for bit
