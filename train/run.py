"""One training run: cache + labels -> fit with Keras callbacks -> the run folder.

The folder layout is the contract of docs/run_format.md. The validation metric is computed each
epoch by :class:`ValidationScorer` from per-frame predictions that tile every validation video
(each frame predicted once), with the same code that writes ``metrics.json``, so the checkpoint
picks the epoch that the report will score.

Example::

    run_dir = run_training(TrainConfig(dataset="synthetic", model="gru", task="expr", epochs=5))
    sorted(p.name for p in run_dir.iterdir())
    # ['config.json', 'history.csv', 'label_distribution.json', 'logs', 'metrics.json', 'model.keras',
     # 'predictions_validation.csv']
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import time
from pathlib import Path

import keras
import pandas as pd

from core.run_folder import RunFolder
from core.tasks import TASKS, TaskSpec
from extract.cache import audio_cache_name, cache_path
from train.config import TrainConfig
from train.data import (
    SplitData,
    audio_stats,
    choose_splits,
    embedding_stats,
    load_split,
    open_caches,
    predictions_table,
)
from train.distribution import data_parallel
from train.fusion import build_fused_model
from train.models import build_model
from train.rebalance import apply_rebalance
from train.windows import WindowDataset, predict_split, train_windows

log = logging.getLogger(__name__)


class ValidationScorer(keras.callbacks.Callback):
    """Adds ``val_loss`` and ``val_<metric>`` to the epoch logs, for the callbacks after it.

    ``val_loss`` is the task loss over the whole validation split at once (for va: 1 - CCC of
    all valid frames), ``val_<metric>`` the score ``metrics.json`` will report.

    Args:
        split: validation arrays. cfg: seq_len, batch_size, model name. task: loss and metric.
    """

    def __init__(self, split: SplitData, cfg: TrainConfig, task: TaskSpec):
        super().__init__()
        self.split, self.cfg, self.task = split, cfg, task
        targets = split.targets()
        self._targets = targets[:-1] if task.level == "frame" else targets
        self._loss = task.make_loss(cfg)

    def score(self, model: keras.Model) -> tuple[float, dict]:
        pred = predict_split(model, self.split, self.cfg.seq_len, self.cfg.batch_size)
        loss = float(keras.ops.convert_to_numpy(self._loss(self._targets, pred)))
        metrics = self.task.metrics(predictions_table(self.split, pred), self.cfg.model)
        return loss, metrics

    def on_epoch_end(self, epoch, logs=None):
        loss, metrics = self.score(self.model)
        logs["val_loss"] = loss
        logs[f"val_{self.task.monitor}"] = metrics[self.task.monitor]


class StopOnNaN(keras.callbacks.Callback):
    """Ends training with an error the moment the loss is not finite.

    Keras' ``TerminateOnNaN`` stops quietly, after which the run would be scored and written like a
    finished one; here the run ends without ``metrics.json``.
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise FloatingPointError(f"loss became {float(loss)} at batch {batch}")


def run_id(cfg: TrainConfig) -> str:
    """``<dataset>-<backbone>-<task>-<model>-<rebalance>-s<seed>-<YYYYmmdd-HHMMSS>`` or ``cfg.run_name``
    (audio-visual: ``<backbone>+audio-<extractor>`` and ``<model>-<fusion>``)."""
    if cfg.run_name:
        return cfg.run_name
    streams = cache_path("", cfg.dataset, cfg.cache_name).stem
    model = cfg.model
    if cfg.fused:
        streams, model = f"{streams}+{audio_cache_name(cfg.audio)}", f"{model}-{cfg.fusion}"
    return f"{cfg.dataset}-{streams}-{cfg.task}-{model}-{cfg.rebalance}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def label_rows(cfg, table: pd.DataFrame | None) -> pd.DataFrame:
    """The rows of ``cfg.task`` in the dataset table (loaded from ``cfg.data_root`` when None)."""
    if table is None:
        from data_manifests.loader import load_dataset

        table = load_dataset(cfg.dataset, cfg.data_root)
    rows = table[table["task"] == cfg.task]
    if rows.empty:
        have = ", ".join(sorted(table["task"].unique())) or "none"
        raise ValueError(
            f"{cfg.data_root}: dataset '{cfg.dataset}' has no '{cfg.task}' labels "
            f"(tasks with labels: {have}); choose --task among them"
        )
    return rows


class ContinuedEarlyStopping(keras.callbacks.EarlyStopping):
    """``EarlyStopping`` that starts from the best value and patience spent of an interrupted run."""

    def __init__(self, *args, best: float | None = None, wait: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self._continued = (best, wait)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        best, wait = self._continued
        if best is not None:
            self.best, self.wait = best, wait


def _open_folder(cfg: TrainConfig, readers: tuple, info: dict, dist: dict) -> RunFolder:
    """The interrupted run of this exact config, to continue, or a new run folder."""
    folder = RunFolder.interrupted(cfg.runs_dir, cfg)
    if folder is not None:
        return folder
    reader, audio = readers
    extra = {"audio_cache": str(audio.path), "audio_cache_meta": dataclasses.asdict(audio.meta)} if audio else {}
    folder = RunFolder.create(cfg.runs_dir, run_id(cfg))
    folder.start(cfg, cache=str(reader.path), cache_meta=dataclasses.asdict(reader.meta), data=info, **extra)
    folder.write_distribution(dist)
    return folder


def _callbacks(folder: RunFolder, scorer: ValidationScorer, cfg: TrainConfig, monitor: str, resume: dict) -> list:
    callbacks = [
        scorer,  # first: the callbacks below read the val_ keys it adds to the logs
        StopOnNaN(),
        *folder.callbacks(monitor, append=bool(resume["epoch"]), best=resume["best"]),
        ContinuedEarlyStopping(
            monitor=monitor, mode="max", patience=cfg.patience, best=resume["best"], wait=resume["wait"]
        ),
    ]
    if importlib.util.find_spec("tensorflow") is not None:  # Keras writes TensorBoard events with tf.summary
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(folder.logs_dir), write_graph=False))
    else:
        log.warning("tensorflow is not installed: no TensorBoard logs in %s", folder.logs_dir)
    return [*callbacks, folder.backup()]  # last: an epoch is backed up once every callback has seen it


def _log_distribution(dist: dict) -> None:
    def short(d: dict) -> dict:
        return {k: v for k, v in d.items() if k != "histogram"}

    log.info(
        "training label distribution (%s, %s) before: %s",
        dist["rebalance"],
        dist["unit"],
        json.dumps(short(dist["before"])),
    )
    log.info(
        "training label distribution (%s, %s) after:  %s",
        dist["rebalance"],
        dist["unit"],
        json.dumps(short(dist["after"])),
    )


def run_training(cfg: TrainConfig, table: pd.DataFrame | None = None) -> Path:
    """Trains ``cfg.model`` on ``cfg.task`` and writes ``<runs_dir>/<run_id>/``; returns that folder.

    Args:
        cfg: the run's settings (resolved and validated here).
        table: the sample table (``data_manifests.schema.COLUMNS``); None loads ``cfg.dataset``
            from ``cfg.data_root`` with ``data_manifests.loader.load_dataset``.
    """
    cfg = cfg.resolved().validate()
    task = TASKS[cfg.task]
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)

    rows = label_rows(cfg, table)
    reader, audio = open_caches(cfg.cache_dir, cfg.dataset, cfg)
    train_rows, val_rows, how = choose_splits(rows, cfg.seed, cfg.val_fraction)
    train, train_info = load_split(reader, train_rows, task, cfg.max_ram_gb, audio)
    val, val_info = load_split(reader, val_rows, task, cfg.max_ram_gb, audio)
    if not val.eligible.any():
        raise ValueError(
            f"{reader.path}: the validation split has no annotated {task.level} with a face; nothing to score"
        )
    train.keep, dist = apply_rebalance(cfg, task, train.labels, train.eligible)
    _log_distribution(dist)
    sample, start = train_windows(train, cfg.seq_len, cfg.stride)
    if not len(sample):
        raise ValueError(
            f"{reader.path}: no training window holds an annotated frame with a face after --rebalance {cfg.rebalance}"
        )
    stats = {"embeddings": embedding_stats(train)}
    if audio is not None:
        stats["audio"] = audio_stats(train)
    log.info(
        "split: %s; train %d samples, %d windows; validation %d samples, %d frames",
        how,
        train_info["samples"],
        len(sample),
        val_info["samples"],
        val_info["frames"],
    )

    dataset = WindowDataset(
        train, sample, start, cfg.seq_len, cfg.batch_size, shuffle_seed=cfg.seed, modality_dropout=cfg.modality_dropout
    )
    info = {
        "split": how,
        "train": train_info,
        "validation": val_info,
        "train_windows": int(len(sample)),
        "embedding_dim": int(stats["embeddings"][0].shape[0]),
        "modalities": cfg.modalities,
    }
    with data_parallel(cfg.distribution, cfg.batch_size) as devices:
        info["devices"] = len(devices) or 1
        return _fit(cfg, task, (reader, audio), dataset, val, stats, info, dist)


def _fit(cfg: TrainConfig, task: TaskSpec, readers, dataset, val, stats: dict, info: dict, dist: dict) -> Path:
    """Builds the model (under the distribution, when one is set), fits it, scores the best epoch."""
    monitor = f"val_{task.monitor}"
    keras.utils.set_random_seed(cfg.seed)  # weights depend on the seed only, not on what ran before
    if cfg.fused:
        model = build_fused_model(cfg, task, stats)
    else:
        model = build_model(cfg, task, *stats["embeddings"])
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.lr),
        loss=task.make_loss(cfg),
        jit_compile={"auto": "auto", "on": True, "off": False}[cfg.jit_compile],
    )
    info["parameters"] = int(model.count_params())
    folder = _open_folder(cfg, readers, info, dist)
    resume = folder.resume_point(monitor)
    if resume["epoch"]:
        log.info("continuing the interrupted run %s at epoch %d", folder.path, resume["epoch"] + 1)
        dataset.skip_epochs(resume["epoch"])
    scorer = ValidationScorer(val, cfg, task)
    try:
        model.fit(
            dataset,
            epochs=cfg.epochs,
            callbacks=_callbacks(folder, scorer, cfg, monitor, resume),
            verbose=cfg.verbose,
            shuffle=False,
        )
    except KeyboardInterrupt:
        if not folder.model_path.exists():
            raise
        log.warning("interrupted: scoring the best model saved so far")
    except FloatingPointError as err:
        raise ValueError(
            f"{folder.path}: training stopped, the {err}; nothing was scored (no metrics.json): lower --lr, "
            f"or check the cache (make extract) and the labels"
        ) from err

    def score(best: keras.Model):
        table_val = predictions_table(val, predict_split(best, val, cfg.seq_len, cfg.batch_size))
        return task.metrics(table_val, cfg.model), table_val

    metrics = folder.finish(model, monitor, score)
    log.info(
        "%s: %s = %s",
        folder.name,
        task.monitor,
        "nan" if math.isnan(metrics[task.monitor]) else f"{metrics[task.monitor]:.4f}",
    )
    return folder.path
