"""One fine-tuning run: crops + frame labels -> frozen warm-up -> top blocks unfrozen -> run folder.

``<runs_dir>/<run id>/`` holds ``config.json``, ``label_distribution.json``, ``history.csv`` (both
phases, one row per epoch), ``model.keras`` (the best epoch by the validation frame metric,
``ModelCheckpoint``), ``predictions_validation.csv``, ``metrics.json`` (frame-level validation
metrics of that model) and ``embedding_layer.txt`` (the layer ``file:`` loading uses), so that

    make extract BACKBONE=file:runs/<run id>/model.keras

puts the fine-tuned embeddings in the feature cache.

Example:

>>> run_dir = run_finetune(FinetuneConfig(dataset="synthetic", backbone="fer", task="expr"))
>>> (run_dir / "embedding_layer.txt").read_text().strip()
'embedding'
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from evaluate.metrics import MONITOR, json_safe, metrics_from_predictions
from finetune.config import FinetuneConfig
from finetune.data import (
    Augment, CropDataset, FrameIndex, frame_index, predict_index, predictions_table, rebalanced, sample_frames,
    saved_crops, split_rows,
)
from finetune.model import build_model, set_trainable
from train.run import make_run_dir, write_json
from train.tasks import TASKS, TaskSpec

log = logging.getLogger(__name__)


class FrameScorer(keras.callbacks.Callback):
    """Adds ``val_loss`` and ``val_<metric>`` (frame level, no augmentation) to the epoch logs.

    Args:
        index: validation frames. input_size, batch_size: how to feed them. task: loss and metric.
        loss: the task loss (reads the mask column of ``index.targets()``).
        model: the model to score; default the one being trained.
    """

    def __init__(self, index: FrameIndex, input_size: tuple, batch_size: int, task: TaskSpec, loss,
                 model: keras.Model | None = None, workers: int = 1):
        super().__init__()
        self.index, self.input_size, self.batch_size, self.task = index, input_size, batch_size, task
        self.loss, self.scored, self.workers = loss, model, workers

    def score(self, model: keras.Model) -> tuple[float, dict, np.ndarray]:
        pred = predict_index(model, self.index, self.input_size, self.batch_size, self.workers)
        loss = float(keras.ops.convert_to_numpy(self.loss(self.index.targets(), pred)))
        return loss, metrics_from_predictions(predictions_table(self.index, pred), self.task.name), pred

    def on_epoch_end(self, epoch, logs=None):
        loss, metrics, _ = self.score(self.scored or self.model)
        logs["val_loss"] = loss
        logs[f"val_{self.task.monitor}"] = metrics[self.task.monitor]


def load_indexes(cfg, task: TaskSpec, table: pd.DataFrame | None) -> tuple[FrameIndex, FrameIndex, dict, dict]:
    """Training (rebalanced) and validation frame indexes, the label distribution and counts."""
    train_rows, val_rows, how = split_rows(cfg, table)
    store = saved_crops(cfg, pd.concat([train_rows, val_rows]))
    train_all = frame_index(train_rows, task, store)
    train, dist = rebalanced(train_all, cfg.train_config())
    val = sample_frames(frame_index(val_rows, task, store), cfg.val_frames, cfg.seed)
    info = {"split": how, "crops": str(store.path) if store else "cropped_aligned",
            "train_samples": len(train_rows), "train_frames": len(train_all),
            "train_frames_after_rebalance": len(train), "validation_samples": len(val_rows),
            "validation_frames_scored": len(val)}
    log.info("split: %s; %d training crops (%d after --rebalance %s), %d validation crops", how,
             len(train_all), len(train), cfg.rebalance, len(val))
    return train, val, dist, info


def run_finetune(cfg: FinetuneConfig, table: pd.DataFrame | None = None) -> Path:
    """Fine-tunes ``cfg.backbone`` on ``cfg.task`` and writes the run folder; returns it.

    Args:
        cfg: the run's settings (resolved and validated here).
        table: the sample table; None loads ``cfg.dataset`` from ``cfg.data_root``.
    """
    cfg = cfg.resolved().validate()
    task = TASKS[cfg.task]
    monitor = f"val_{MONITOR[task.name]}"
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    train, val, dist, info = load_indexes(cfg, task, table)

    model = build_model(cfg.backbone, cfg.input_size, cfg.init, cfg.weights, task, cfg.embedding_dim,
                        cfg.dropout, cfg.seed)
    input_size = tuple(model.input_shape[1:])
    loss = task.make_loss(cfg.train_config())
    dataset = CropDataset(train, input_size, cfg.batch_size, Augment.of(cfg), seed=cfg.seed,
                          frames_per_epoch=cfg.train_frames, workers=cfg.workers)
    run_dir = open_run(cfg, f"finetune-{cfg.backbone}-{cfg.task}-{cfg.rebalance}", model, input_size, info, dist,
                       model_name=f"finetune:{cfg.backbone}")

    callbacks = [
        FrameScorer(val, input_size, cfg.batch_size, task, loss, workers=cfg.workers),
        keras.callbacks.ModelCheckpoint(str(run_dir / "model.keras"), monitor=monitor, mode="max",
                                        save_best_only=True),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
    ]
    fit_in_phases(model, model, dataset, cfg, loss, callbacks)
    if not (run_dir / "model.keras").exists():
        log.warning("%s was never finite: saving the last epoch's model", monitor)
        model.save(run_dir / "model.keras")
    return finish_run(run_dir, callbacks[0], monitor)


def open_run(cfg, name: str, model: keras.Model, input_size: tuple, info: dict, dist: dict, **extra) -> Path:
    """Makes the run folder and writes ``config.json`` (the resolved config, versions, data counts,
    ``extra``) and ``label_distribution.json``; returns the folder.

    Args:
        cfg: the run's config (its ``run_name``, else ``<dataset>-<name>-s<seed>-<time>``).
        name: the middle of the generated folder name. model: the model trained (parameter count).
        extra: more config keys; ``model_name`` becomes ``model``, what the report groups by.
    """
    folder = cfg.run_name or f"{cfg.dataset}-{name}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = make_run_dir(cfg.runs_dir, folder)
    extra["model"] = extra.pop("model_name")
    write_json(run_dir / "config.json", {
        **dataclasses.asdict(cfg), **extra, "keras_version": keras.__version__, "backend": keras.backend.backend(),
        "model_input_size": list(input_size), "data": info, "parameters": int(model.count_params())})
    write_json(run_dir / "label_distribution.json", dist)
    log.info("run folder %s", run_dir)
    return run_dir


def fit_in_phases(model: keras.Model, frame_model: keras.Model, dataset, cfg, loss, callbacks: list) -> None:
    """``cfg.warmup_epochs`` with the backbone frozen (``cfg.lr``), then ``cfg.epochs`` with the top
    ``cfg.unfreeze_blocks`` blocks of ``frame_model``'s backbone trainable (``cfg.finetune_lr``).

    ``frame_model`` is ``model`` itself, or the per-frame model whose layers ``model`` reuses
    (the joint CNN+RNN); one history runs across both phases.
    """
    done = 0
    for epochs, lr, blocks in [(cfg.warmup_epochs, cfg.lr, None), (cfg.epochs, cfg.finetune_lr, cfg.unfreeze_blocks)]:
        if not epochs:
            continue
        if blocks is not None:
            unfrozen = set_trainable(frame_model, blocks, cfg.train_batchnorm)
            log.info("unfroze %d backbone layers with weights (top %s blocks): %s", len(unfrozen), blocks,
                     ", ".join(unfrozen))
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, jit_compile=cfg.jit_compile)
        model.fit(dataset, initial_epoch=done, epochs=done + epochs, callbacks=callbacks, verbose=cfg.verbose)
        done += epochs


def finish_run(run_dir: Path, scorer: FrameScorer, monitor: str) -> Path:
    """Scores the saved best model, writes predictions, metrics and ``embedding_layer.txt``."""
    from extract.backbones import FILE_PREFIX, load_backbone

    best = keras.saving.load_model(run_dir / "model.keras", safe_mode=True, compile=False)
    _, metrics, pred = scorer.score(best)
    predictions_table(scorer.index, pred).to_csv(run_dir / "predictions_validation.csv", index=False)
    history = pd.read_csv(run_dir / "history.csv")
    scores = history[monitor].to_numpy(float) if monitor in history else np.array([])
    metrics["epochs_run"] = int(len(history))
    metrics["best_epoch"] = int(np.nanargmax(scores)) if np.isfinite(scores).any() else -1
    # The layer stage one picks by default for this file (extract/backbone_models.build_file_model).
    layer = load_backbone(FILE_PREFIX + str(run_dir / "model.keras")).embedding_layer
    (run_dir / "embedding_layer.txt").write_text(layer + "\n")
    metrics["embedding_layer"] = layer
    write_json(run_dir / "metrics.json", json_safe(metrics))
    log.info("%s: frame-level %s = %.4f", run_dir.name, monitor[4:], metrics[monitor[4:]])
    return run_dir
