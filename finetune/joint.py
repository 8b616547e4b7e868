"""End-to-end CNN+RNN (Kollias et al. 2017): the backbone and stage two's recurrent model trained
together on short clips of face crops, to compare with the two-stage pipeline in the report.

The model is the two stages glued: ``pixels [B, T, H, W, C]`` -> the fine-tuning model's frame
encoder (backbone -> ``embedding``, ``finetune.model``) on every frame (``TimeDistributed``) ->
stage two's ``--model`` (``train.models``: standardise, gate faceless frames, GRU/LSTM, head).
Clips are cut, labelled and scored exactly as stage two cuts windows from the cache
(``train.windows``: training windows every ``stride`` frames, validation tiled), so the metrics are
comparable; frames without a crop are faceless rows (zero pixels, gated, never scored).
Training: ``warmup_epochs`` with the backbone frozen (the RNN learns from the pretrained
embeddings), then ``epochs`` with its top ``unfreeze_blocks`` blocks trainable.

The run folder is a stage-two run folder (docs/run_format.md) whose ``model`` is
``joint-<model>``, so ``make report`` puts it beside the two-stage runs of the same backbone.

Example::

    run_dir = run_joint(JointConfig(dataset="synthetic", backbone="fer", task="expr", seq_len=16))
    json.loads((run_dir / "metrics.json").read_text())["model"]   # 'joint-gru'
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from core.registry import ConfigError
from core.tasks import TASKS, TaskSpec
from extract.backbones import to_model_input
from finetune.config import BackboneTuning, CropRunFields, _raise_first, frame_tasks
from finetune.data import Augment, labelled_crops, read_any, saved_crops, split_rows
from finetune.model import EMBEDDING_LAYER, build_model
from finetune.run import fit_in_phases, open_run
from train.config import TrainConfig
from train.data import SplitData, predictions_table
from train.rebalance import apply_rebalance
from train.windows import predict_split, train_windows, window_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JointConfig(BackboneTuning, CropRunFields):
    """One joint CNN+RNN run (CLI flags mirror the field names).

    Args:
        model, layers, units, dropout: stage two's recurrent model (``train.models.MODELS``).
        seq_len: frames per clip. stride: step between training clips (0: ``seq_len // 2``).
        warmup_epochs, epochs: as ``FinetuneConfig`` (the RNN trains in both phases).
        stats_frames: training crops embedded once to set the RNN's input standardisation.
        batch_size: clips per step. flip, shift, rotation, brightness: as ``FinetuneConfig``, one
            draw per clip. train_frames, val_frames: not used (every clip, every validation frame).
        Other fields: :class:`BackboneTuning`, :class:`CropRunFields`.
    """

    model: str = "gru"
    layers: int = 1
    units: int = 64
    dropout: float = 0.2
    seq_len: int = 16
    stride: int = 0
    warmup_epochs: int = 2
    epochs: int = 2
    stats_frames: int = 512
    batch_size: int = 8

    def resolved(self) -> "JointConfig":
        return dataclasses.replace(super().resolved(), stride=self.stride or max(self.seq_len // 2, 1))

    def validate(self) -> "JointConfig":
        from extract.backbones import BACKBONES
        from train.models import MODELS

        if self.backbone not in BACKBONES:
            raise ConfigError(
                f"--backbone {self.backbone!r} cannot be trained end to end; choose one of: "
                f"{', '.join(sorted(BACKBONES))}"
            )
        MODELS[self.model]  # unknown names raise, listing the valid ones
        checks = [
            ("task", self.task in frame_tasks(), f"must be one of {', '.join(frame_tasks())} (per-frame labels)"),
            ("seq_len", self.seq_len >= 2, "must be >= 2"),
            ("layers", self.layers >= 1, "must be >= 1"),
            ("units", self.units >= 1, "must be >= 1"),
            (
                "epochs",
                self.epochs >= 0 and self.warmup_epochs >= 0 and self.epochs + self.warmup_epochs >= 1,
                "must be >= 0, with --warmup-epochs + --epochs >= 1",
            ),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("stats_frames", self.stats_frames >= 1, "must be >= 1"),
            ("train_frames", self.train_frames == 0, "is not used by joint runs (every training clip is used)"),
            ("val_frames", self.val_frames == 0, "is not used by joint runs (every validation frame is scored)"),
        ]
        _raise_first(self, checks)
        return self

    def rnn_config(self) -> TrainConfig:
        return dataclasses.replace(
            self.train_config(),
            model=self.model,
            layers=self.layers,
            units=self.units,
            dropout=self.dropout,
            seq_len=self.seq_len,
        )


def clip_split(rows: pd.DataFrame, task: TaskSpec, store) -> tuple[SplitData, np.ndarray]:
    """Stage two's :class:`SplitData` over the labelled frames of ``rows``, with a crop path per
    row instead of an embedding (``""``: no face, and the padding row)."""
    ids, offsets, faces, frames, labels, valid, paths = [], [0], [], [], [], [], []
    for row in rows.itertuples(index=False):
        crop_of, numbers, lab, ok = labelled_crops(row, task, store)
        ids.append(row.sample_id)
        offsets.append(offsets[-1] + len(numbers))
        paths += [crop_of.get(int(n), "") for n in numbers]
        faces.append(np.array([int(n) in crop_of for n in numbers], bool))
        frames.append(numbers)
        labels.append(lab)
        valid.append(ok)
    n = offsets[-1]
    split = SplitData(
        task=task,
        sample_ids=ids,
        offsets=np.asarray(offsets),
        x=np.zeros((n + 1, 0), np.float16),
        face=np.append(np.concatenate(faces), False),
        frame_index=np.concatenate(frames).astype(np.int32),
        labels=np.concatenate(labels).astype(np.float32),
        valid=np.concatenate(valid),
        keep=np.ones(n, bool),
    )
    return split, np.asarray(paths + [""], object)


class ClipDataset(keras.utils.PyDataset):
    """Batches ``({"pixels": [B, T, H, W, C], "face": [B, T]}, targets [B, T, C + 1])``, read per batch.

    With ``augment``, every frame of a clip gets the same flip, shift, rotation and brightness
    (one draw per clip, seeded from ``(shuffle_seed, epoch, position)``): the clip stays a clip.
    """

    def __init__(
        self,
        split: SplitData,
        paths: np.ndarray,
        store,
        sample,
        start,
        cfg: JointConfig,
        input_size: tuple,
        shuffle_seed: int | None = None,
        with_targets: bool = True,
        augment: Augment | None = None,
    ):
        super().__init__(workers=cfg.workers, use_multiprocessing=False)
        self.split, self.paths, self.store, self.cfg = split, paths, store, cfg
        self.sample, self.start, self.input_size = np.asarray(sample), np.asarray(start), tuple(input_size)
        self.with_targets, self.augment, self.seed = with_targets, augment, shuffle_seed
        self._targets = split.targets()
        self._rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
        self._order = np.arange(len(self.sample))
        self.epoch = -1
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.sample) / self.cfg.batch_size)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        if self._rng is not None:
            self._order = self._rng.permutation(len(self.sample))

    def __getitem__(self, index: int):
        pick = self._order[index * self.cfg.batch_size : (index + 1) * self.cfg.batch_size]
        rows = window_rows(self.split, self.sample[pick], self.start[pick], self.cfg.seq_len)
        pixels = np.zeros((*rows.shape, *self.input_size), np.float32)
        for (b, t), row in np.ndenumerate(rows):
            if self.paths[row]:
                image = read_any(self.paths[row], self.store)
                if self.augment is not None:  # the same seed for every frame of clip b: the same draws
                    clip = [self.seed or 0, self.epoch, index * self.cfg.batch_size + b]
                    image = np.ascontiguousarray(self.augment(image, np.random.default_rng(clip)))
                pixels[b, t] = to_model_input(image, self.input_size)
        x = {"pixels": pixels, "face": self.split.face[rows].astype(np.float32)}
        return (x, self._targets[rows]) if self.with_targets else x


def build_joint(
    cfg: JointConfig, task: TaskSpec, mean: np.ndarray, variance: np.ndarray, frame_model: keras.Model
) -> keras.Model:
    """``frame_model``'s encoder on every frame, then stage two's ``cfg.model`` with ``task``'s head."""
    from train.models import build_model as build_rnn

    encoder = keras.Model(frame_model.inputs, frame_model.get_layer(EMBEDDING_LAYER).output, name="encoder")
    pixels = keras.Input((None, *encoder.input_shape[1:]), name="pixels")
    face = keras.Input((None,), name="face")
    embeddings = keras.layers.TimeDistributed(encoder, name="frames")(pixels)
    rnn = build_rnn(cfg.rnn_config(), task, mean, variance)
    return keras.Model(
        {"pixels": pixels, "face": face},
        rnn({"embeddings": embeddings, "face": face}),
        name=f"joint_{cfg.model}_{task.name}",
    )


def _embedding_stats(frame_model, split, paths, store, input_size, cfg) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the initial encoder's embeddings over a seeded sample of training crops."""
    encoder = keras.Model(frame_model.inputs, frame_model.get_layer(EMBEDDING_LAYER).output)
    rows = np.flatnonzero(split.face[: split.n_frames])
    rows = np.random.default_rng(cfg.seed).permutation(rows)[: cfg.stats_frames]
    crops = np.stack([to_model_input(read_any(paths[r], store), input_size) for r in rows]).astype(np.float32)
    emb = np.asarray(encoder.predict(crops, batch_size=64, verbose=0), np.float64)
    return emb.mean(axis=0), emb.var(axis=0) + 1e-6


class ClipScorer(keras.callbacks.Callback):
    """Adds ``val_<metric>`` (every validation frame, tiled as stage two predicts) to the epoch logs."""

    def __init__(self, split: SplitData, paths, store, cfg: JointConfig, input_size: tuple):
        super().__init__()
        self.split, self.paths, self.store, self.cfg, self.input_size = split, paths, store, cfg, input_size

    def predict(self, model: keras.Model) -> np.ndarray:
        return predict_split(
            model,
            self.split,
            self.cfg.seq_len,
            self.cfg.batch_size,
            inputs=lambda sample, start: ClipDataset(
                self.split, self.paths, self.store, sample, start, self.cfg, self.input_size, with_targets=False
            ),
        )

    def score(self, model: keras.Model) -> tuple[dict, pd.DataFrame]:
        table = predictions_table(self.split, self.predict(model))
        return self.split.task.metrics(table, f"joint-{self.cfg.model}"), table

    def on_epoch_end(self, epoch, logs=None):
        metric = self.split.task.monitor
        logs[f"val_{metric}"] = self.score(self.model)[0][metric]


def run_joint(cfg: JointConfig, table: pd.DataFrame | None = None) -> Path:
    """Trains the joint model and writes a stage-two run folder; returns it."""
    cfg = cfg.resolved().validate()
    task = TASKS[cfg.task]
    monitor = f"val_{task.monitor}"
    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    train_rows, val_rows, how = split_rows(cfg, table)
    store = saved_crops(cfg, pd.concat([train_rows, val_rows]))
    train, train_paths = clip_split(train_rows, task, store)
    val, val_paths = clip_split(val_rows, task, store)
    train.keep, dist = apply_rebalance(cfg.train_config(), task, train.labels, train.eligible)
    frame_model = build_model(cfg.backbone, cfg.input_size, cfg.init, cfg.weights, task, 0, 0.0, cfg.seed)
    input_size = tuple(frame_model.input_shape[1:])
    model = build_joint(
        cfg, task, *_embedding_stats(frame_model, train, train_paths, store, input_size, cfg), frame_model
    )
    sample, start = train_windows(train, cfg.seq_len, cfg.stride)
    dataset = ClipDataset(
        train, train_paths, store, sample, start, cfg, input_size, shuffle_seed=cfg.seed, augment=Augment.of(cfg)
    )
    info = {
        "split": how,
        "crops": str(store.path) if store else "cropped_aligned",
        "train_samples": len(train_rows),
        "train_frames": train.n_frames,
        "train_windows": len(sample),
        "validation_samples": len(val_rows),
        "validation_frames": val.n_frames,
    }
    folder = open_run(
        cfg,
        f"{cfg.backbone}-{cfg.task}-joint-{cfg.model}-{cfg.rebalance}",
        model,
        input_size,
        info,
        dist,
        model_name=f"joint-{cfg.model}",
        rnn=cfg.model,
    )
    log.info(
        "joint %s on %s: %d training clips of %d frames; run folder %s",
        cfg.model,
        cfg.backbone,
        len(sample),
        cfg.seq_len,
        folder.path,
    )

    scorer = ClipScorer(val, val_paths, store, cfg, input_size)
    loss = task.make_loss(cfg.train_config())
    fit_in_phases(model, frame_model, dataset, cfg, loss, [scorer, *folder.callbacks(monitor, append=True)])
    metrics = folder.finish(model, monitor, scorer.score)
    log.info("%s: %s", folder.path, json.dumps({k: v for k, v in metrics.items() if isinstance(v, float)}))
    return folder.path
