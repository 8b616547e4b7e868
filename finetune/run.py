"""One fine-tuning run: crops + frame labels -> frozen warm-up -> top blocks unfrozen -> run folder.

``<runs_dir>/<run id>/`` holds ``config.json``, ``label_distribution.json``, ``history.csv`` (both
phases, one row per epoch), ``model.keras`` (the best epoch by the validation frame metric,
``ModelCheckpoint``), ``predictions_validation.csv``, ``metrics.json`` (frame-level validation
metrics of that model) and ``embedding_layer.txt`` (the layer ``file:`` loading uses), so that

    make extract BACKBONE=file:runs/<run id>/model.keras

puts the fine-tuned embeddings in the feature cache.

Example::

    run_dir = run_finetune(FinetuneConfig(dataset="synthetic", backbone="fer", task="expr"))
    (run_dir / "embedding_layer.txt").read_text().strip()   # 'embedding'
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from core import run_folder as rf
from core.run_folder import RunFolder
from core.tasks import TASKS, TaskSpec
from finetune.config import FinetuneConfig
from finetune.data import (
    Augment,
    CropDataset,
    FrameIndex,
    frame_index,
    predict_index,
    predictions_table,
    rebalanced,
    sample_frames,
    saved_crops,
    split_rows,
)
from finetune.model import build_model, set_trainable

log = logging.getLogger(__name__)


class FrameScorer(keras.callbacks.Callback):
    """Adds ``val_loss`` and ``val_<metric>`` (frame level, no augmentation) to the epoch logs.

    Args:
        index: validation frames. input_size, batch_size: how to feed them. task: loss and metric.
        loss: the task loss (reads the mask column of ``index.targets()``).
        model: the model to score; default the one being trained.
    """

    def __init__(
        self,
        index: FrameIndex,
        input_size: tuple,
        batch_size: int,
        task: TaskSpec,
        loss,
        model: keras.Model | None = None,
        workers: int = 1,
    ):
        super().__init__()
        self.index, self.input_size, self.batch_size, self.task = index, input_size, batch_size, task
        self.loss, self.scored, self.workers = loss, model, workers

    def score(self, model: keras.Model) -> tuple[float, dict, np.ndarray]:
        pred = predict_index(model, self.index, self.input_size, self.batch_size, self.workers)
        loss = float(keras.ops.convert_to_numpy(self.loss(self.index.targets(), pred)))
        return loss, self.task.metrics(predictions_table(self.index, pred)), pred

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
    info = {
        "split": how,
        "crops": str(store.path) if store else "cropped_aligned",
        "train_samples": len(train_rows),
        "train_frames": len(train_all),
        "train_frames_after_rebalance": len(train),
        "validation_samples": len(val_rows),
        "validation_frames_scored": len(val),
    }
    log.info(
        "split: %s; %d training crops (%d after --rebalance %s), %d validation crops",
        how,
        len(train_all),
        len(train),
        cfg.rebalance,
        len(val),
    )
    return train, val, dist, info


def run_finetune(cfg: FinetuneConfig, table: pd.DataFrame | None = None) -> Path:
    """Fine-tunes ``cfg.backbone`` on ``cfg.task`` and writes the run folder; returns it.

    Args:
        cfg: the run's settings (resolved and validated here).
        table: the sample table; None loads ``cfg.dataset`` from ``cfg.data_root``.
    """
    cfg = cfg.resolved().validate()
    task = TASKS[cfg.task]
    monitor = f"val_{task.monitor}"
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    train, val, dist, info = load_indexes(cfg, task, table)

    model = build_model(
        cfg.backbone, cfg.input_size, cfg.init, cfg.weights, task, cfg.embedding_dim, cfg.dropout, cfg.seed
    )
    input_size = tuple(model.input_shape[1:])
    loss = task.make_loss(cfg.train_config())
    dataset = CropDataset(
        train,
        input_size,
        cfg.batch_size,
        Augment.of(cfg),
        seed=cfg.seed,
        frames_per_epoch=cfg.train_frames,
        workers=cfg.workers,
    )
    folder = open_run(
        cfg,
        f"finetune-{cfg.backbone}-{cfg.task}-{cfg.rebalance}",
        model,
        input_size,
        info,
        dist,
        model_name=f"finetune:{cfg.backbone}",
    )
    scorer = FrameScorer(val, input_size, cfg.batch_size, task, loss, workers=cfg.workers)
    fit_in_phases(model, model, dataset, cfg, loss, [scorer, *folder.callbacks(monitor, append=True)])
    finish_run(folder, model, scorer, monitor)
    return folder.path


def open_run(cfg, name: str, model: keras.Model, input_size: tuple, info: dict, dist: dict, **extra) -> RunFolder:
    """Makes the run folder and writes ``config.json`` (the resolved config, versions, data counts,
    ``extra``) and ``label_distribution.json``; returns the folder.

    Args:
        cfg: the run's config (its ``run_name``, else ``<dataset>-<name>-s<seed>-<time>``).
        name: the middle of the generated folder name. model: the model trained (parameter count).
        extra: more config keys; ``model_name`` becomes ``model``, what the report groups by.
    """
    folder = cfg.run_name or f"{cfg.dataset}-{name}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = RunFolder.create(cfg.runs_dir, folder)
    extra["model"] = extra.pop("model_name")
    run.start(cfg, **extra, model_input_size=list(input_size), data=info, parameters=int(model.count_params()))
    run.write_distribution(dist)
    return run


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
            log.info(
                "unfroze %d backbone layers with weights (top %s blocks): %s",
                len(unfrozen),
                blocks,
                ", ".join(unfrozen),
            )
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, jit_compile=cfg.jit_compile)
        model.fit(dataset, initial_epoch=done, epochs=done + epochs, callbacks=callbacks, verbose=cfg.verbose)
        done += epochs


def finish_run(folder: RunFolder, model: keras.Model, scorer: FrameScorer, monitor: str, extra=None) -> dict:
    """Scores the saved best model, writes predictions, metrics and ``embedding_layer.txt``."""
    from extract.backbones import FILE_PREFIX, load_backbone

    def score(best):
        _, metrics, pred = scorer.score(best)
        return metrics, predictions_table(scorer.index, pred)

    def embedding_layer(best):
        # The layer stage one picks by default for this file (extract/backbone_models.build_file_model).
        layer = load_backbone(FILE_PREFIX + str(folder.model_path)).embedding_layer
        folder.file(rf.EMBEDDING_LAYER).write_text(layer + "\n")
        return {"embedding_layer": layer, **(extra(best) if extra else {})}

    metrics = folder.finish(model, monitor, score, extra=embedding_layer)
    log.info("%s: frame-level %s = %.4f", folder.name, monitor[4:], metrics[monitor[4:]])
    return metrics
