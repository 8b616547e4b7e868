"""`python -m train.bench`: training throughput (windows/s) and the data path's share of it.

Builds an in-memory split of random embeddings (no cache, no dataset needed), then measures
(1) the data path alone: :class:`train.windows.WindowDataset` batches per second, and (2) ``fit`` of
the chosen model on those batches, timing the epochs after the first (which pays compilation).
If (1) is many times (2), the accelerator never waits on the data.

Example:

    KERAS_BACKEND=jax python -m train.bench --model gru --layers 2 --units 256 --seq-len 64 --dim 128
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import keras
import numpy as np

from core.tasks import TASKS
from train.config import TrainConfig
from train.data import SplitData
from train.fusion import FUSIONS, build_fused_model
from train.models import MODELS, build_model
from train.windows import WindowDataset, train_windows


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t)


def random_split(task_name: str, videos: int, frames: int, dim: int, seed: int) -> SplitData:
    """A frame-task split of random embeddings and labels, every frame annotated with a face."""
    task = TASKS[task_name]
    rng = np.random.default_rng(seed)
    n = videos * frames
    if task.labels.kind == "class":
        labels = rng.integers(0, task.outputs, (n, 1)).astype(np.float32)
    elif task.labels.kind == "multilabel":
        labels = (rng.random((n, task.outputs)) < 0.3).astype(np.float32)
    else:
        labels = rng.uniform(-1, 1, (n, task.outputs)).astype(np.float32)
    x = np.concatenate([rng.normal(size=(n, dim)), np.zeros((1, dim))]).astype(np.float16)
    return SplitData(
        task=task,
        sample_ids=[f"v{i}" for i in range(videos)],
        offsets=np.arange(0, n + 1, frames, dtype=np.int64),
        x=x,
        face=np.concatenate([np.ones(n, bool), [False]]),
        frame_index=np.tile(np.arange(1, frames + 1, dtype=np.int32), videos),
        labels=labels,
        valid=np.ones(n, bool),
        keep=np.ones(n, bool),
    )


def with_audio(split: SplitData, dim: int, seed: int) -> SplitData:
    """``split`` with random audio features of size ``dim`` on every frame (an audio-visual split)."""
    rng = np.random.default_rng(seed + 1)
    split.audio = np.concatenate([rng.normal(size=(split.n_frames, dim)), np.zeros((1, dim))]).astype(np.float16)
    split.heard = np.concatenate([np.ones(split.n_frames, bool), [False]])
    return split


def bench(cfg: TrainConfig, dim: int, videos: int, frames: int, epochs: int, audio_dim: int = 0) -> dict:
    """Measures the data path and ``fit``; returns the figures as a dict. ``audio_dim`` > 0: the
    audio-visual model of ``cfg.fusion`` on faces + audio features of that size."""
    if cfg.task not in ("va", "expr", "au"):
        raise ValueError(f"--task {cfg.task}: the benchmark covers the frame tasks va, expr, au")
    keras.utils.set_random_seed(cfg.seed)
    split = random_split(cfg.task, videos, frames, dim, cfg.seed)
    if audio_dim:
        split = with_audio(split, audio_dim, cfg.seed)
    sample, start = train_windows(split, cfg.seq_len, cfg.stride)
    ds = WindowDataset(split, sample, start, cfg.seq_len, cfg.batch_size, shuffle_seed=cfg.seed)
    t = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
    data_s = time.perf_counter() - t
    task = TASKS[cfg.task]
    stats = {"embeddings": (np.zeros(dim, np.float32), np.ones(dim, np.float32))}
    if audio_dim:
        stats["audio"] = (np.zeros(audio_dim, np.float32), np.ones(audio_dim, np.float32))
        model = build_fused_model(cfg, task, stats)
    else:
        model = build_model(cfg, task, *stats["embeddings"])
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.lr),
        loss=task.make_loss(cfg),
        jit_compile={"auto": "auto", "on": True, "off": False}[cfg.jit_compile],
    )
    timer = _EpochTimer()
    model.fit(ds, epochs=epochs, callbacks=[timer], verbose=0, shuffle=False)
    steady = float(np.median(timer.seconds[1:])) if len(timer.seconds) > 1 else timer.seconds[0]
    return {
        "backend": keras.backend.backend(),
        "devices": [str(d) for d in _devices()],
        "model": cfg.model,
        "layers": cfg.layers,
        "units": cfg.units,
        "seq_len": cfg.seq_len,
        "dim": dim,
        "audio_dim": audio_dim,
        "fusion": cfg.fusion if audio_dim else "",
        "batch_size": cfg.batch_size,
        "windows_per_epoch": int(len(sample)),
        "parameters": int(model.count_params()),
        "data_windows_per_s": round(len(sample) / data_s, 1),
        "first_epoch_s": round(timer.seconds[0], 2),
        "epoch_s": round(steady, 3),
        "train_windows_per_s": round(len(sample) / steady, 1),
        "data_share_of_step": round(data_s / steady, 4),
    }


def _devices() -> list:
    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()
    return ["cpu-or-default"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m train.bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="gru", choices=list(MODELS))
    p.add_argument("--task", default="va", choices=("va", "expr", "au"))
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--units", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--dim", type=int, default=128, help="embedding size (fer: 128)")
    p.add_argument(
        "--audio-dim", type=int, default=0, help="> 0: the audio-visual model on audio features of this size"
    )
    p.add_argument("--fusion", default="model", choices=list(FUSIONS))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--frames", type=int, default=2048, help="frames per video")
    p.add_argument("--epochs", type=int, default=3, help="the first one is not timed")
    p.add_argument("--jit-compile", default="auto", choices=("auto", "on", "off"))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    cfg = TrainConfig(
        model=a.model,
        task=a.task,
        layers=a.layers,
        units=a.units,
        seq_len=a.seq_len,
        stride=a.seq_len,
        batch_size=a.batch_size,
        jit_compile=a.jit_compile,
        seed=a.seed,
        dropout=0.0,
        audio="logmel" if a.audio_dim else "",
        fusion=a.fusion,
    ).validate()
    print(json.dumps(bench(cfg, a.dim, a.videos, a.frames, a.epochs, a.audio_dim)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
