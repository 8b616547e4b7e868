"""Settings of a fine-tuning run and of a distillation run: two small frozen dataclasses.

``config.json`` in the run folder is their ``dataclasses.asdict`` plus versions and data counts.

>>> cfg = FinetuneConfig(dataset="synthetic", backbone="fer", task="expr", epochs=3)
>>> cfg.resolved().data_root
'data/synthetic'
>>> frame_tasks()
['va', 'expr', 'au']
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from core.config import DEFAULT_BACKBONE, DataFields, RunFields
from core.registry import ConfigError
from core.tasks import TASKS
from train.config import TrainConfig

INITS = ("pretrained", "random")


def frame_tasks() -> list[str]:
    """The tasks a crop can carry a label of: frame-level ones (clip tasks have no per-frame truth)."""
    return [name for name, task in TASKS.items() if task.level == "frame"]


@dataclass(frozen=True)
class CropRunFields(DataFields, RunFields):
    """The settings fine-tuning and distillation share: crops, optimisation, augmentation, splits.

    Both split and rebalance exactly as stage two does (:meth:`train_config`).

    Args:
        crops: face crops saved by ``make extract SAVE_CROPS=1`` (a ``*.crops.h5`` file) for the
            samples without ``cropped_aligned`` folders; empty: the one such file under
            ``<cache_dir>/<dataset>/``.
        batch_size: crops per step. lr: learning rate. train_frames: crops drawn (seeded) per
            training epoch, 0: all. val_frames: fixed seeded subset of validation crops scored
            each epoch, 0: all.
        flip, shift, rotation, brightness: augmentation: horizontal flip with p=0.5, random
            translation up to ``shift`` x the crop side, rotation up to ``rotation`` degrees,
            brightness factor in ``1 +- brightness``. Training split only.
        rebalance, undersample_cap, va_bins: as ``make train`` (``train.rebalance``), training
            split only: dropped frames are never read.
        val_fraction: share of subjects held out when the dataset has no validation split.
        workers: threads that read crops for the next batches (``keras.utils.PyDataset``).
        jit_compile: XLA for the train step (off: on 2 CPU cores it made a fer step 7x slower).
        Other fields: :class:`core.config.DataFields`, :class:`core.config.RunFields`.
    """

    crops: str = ""
    batch_size: int = 64
    lr: float = 1e-3
    train_frames: int = 0
    val_frames: int = 0
    flip: bool = True
    shift: float = 0.06
    rotation: float = 8.0
    brightness: float = 0.2
    rebalance: str = "none"
    undersample_cap: float = 1.0
    va_bins: int = 40
    val_fraction: float = 0.2
    workers: int = 1
    jit_compile: bool = False

    def train_config(self) -> TrainConfig:
        """The stage-two config whose split and rebalancing settings this run shares."""
        return TrainConfig(
            dataset=self.dataset,
            task=self.task,
            rebalance=self.rebalance,
            seed=self.seed,
            undersample_cap=self.undersample_cap,
            va_bins=self.va_bins,
            val_fraction=self.val_fraction,
        )


@dataclass(frozen=True)
class BackboneTuning(DataFields):
    """The backbone being trained and its two phases: what fine-tuning and the joint CNN+RNN share.

    Args:
        dataset, data_root: the dataset (``data_manifests``) and where it lives (empty:
            ``data/<dataset>``). Crops are read from its ``frames_dir`` (``cropped_aligned``), or
            from ``crops`` for samples without one.
        backbone: a name of ``extract.backbones.BACKBONES`` (``file:`` models are not fine-tuned
            here: their preprocessing is unknown). weights: local weights file for it.
        input_size: (H, W, C) for the ``keras.applications`` backbones; empty: their default.
        init: ``pretrained`` (the backbone's weights) or ``random`` (re-initialised from ``seed``).
        task: ``va``, ``expr`` or ``au``.
        unfreeze_blocks: after the warm-up, the top blocks made trainable; -1: every layer.
        train_batchnorm: also train the BatchNormalization layers of the unfrozen blocks
            (default: they stay in inference mode, the usual choice for small batches).
        finetune_lr: learning rate after the warm-up (``lr``: during it).
    """

    backbone: str = DEFAULT_BACKBONE
    weights: str = ""
    input_size: tuple = ()
    init: str = "pretrained"
    task: str = "expr"
    unfreeze_blocks: int = 2
    train_batchnorm: bool = False
    finetune_lr: float = 3e-4

    def resolved(self):
        """The config with derived defaults filled in (what ``config.json`` records)."""
        return dataclasses.replace(self, data_root=self.root(), input_size=tuple(int(v) for v in self.input_size))


@dataclass(frozen=True)
class FinetuneConfig(BackboneTuning, CropRunFields):
    """One fine-tuning run (CLI flags mirror the field names).

    Args:
        embedding_dim: 0: the embedding is the backbone's pooled features (layer ``embedding``);
            > 0: a Dense(relu) of that width named ``embedding`` after them (``dropout`` before it).
        dropout: dropout rate before that Dense layer.
        warmup_epochs: epochs with the backbone frozen (head only, ``lr``). epochs: epochs after
            that with the top ``unfreeze_blocks`` blocks trainable (``finetune_lr``).
        Other fields: :class:`BackboneTuning`, :class:`CropRunFields`.
    """

    embedding_dim: int = 0
    dropout: float = 0.2
    warmup_epochs: int = 1
    epochs: int = 4

    def validate(self) -> "FinetuneConfig":
        """Checks names against the registries and numbers against their ranges; returns self."""
        from extract.backbones import BACKBONES, FILE_PREFIX, valid_names

        if self.backbone.startswith(FILE_PREFIX) or self.backbone not in BACKBONES:
            raise ConfigError(
                f"--backbone {self.backbone!r} cannot be fine-tuned; choose one of: "
                f"{', '.join(sorted(BACKBONES))} (stage one also takes {valid_names()})"
            )
        _check_common(self)
        checks = [
            ("init", self.init in INITS, f"must be one of {', '.join(INITS)}"),
            ("embedding_dim", self.embedding_dim >= 0, "must be >= 0 (0: pooled backbone features)"),
            ("warmup_epochs", self.warmup_epochs >= 0, "must be >= 0"),
            (
                "epochs",
                self.epochs >= 0 and self.warmup_epochs + self.epochs >= 1,
                "must be >= 0, with --warmup-epochs + --epochs >= 1",
            ),
            ("unfreeze_blocks", self.unfreeze_blocks >= -1, "must be >= -1 (-1: every layer)"),
            ("finetune_lr", self.finetune_lr > 0, "must be > 0"),
        ]
        _raise_first(self, checks)
        return self


@dataclass(frozen=True)
class DistillConfig(CropRunFields):
    """One distillation run: a student backbone trained on a teacher run's softened outputs.

    Loss (Hinton et al. 2015) per crop: ``alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))
    + (1 - alpha) * CE(y, softmax(z_s))`` for expr (sigmoid with T per AU for au), plus
    ``embedding_weight x`` the mean squared error between a linear projection of the student's
    embedding and the teacher's embedding.

    Args:
        teacher: a fine-tuning run folder (holding ``model.keras`` and ``config.json``), or its
            name under ``runs_dir``. The dataset, data root and task default to the teacher's.
        student: a ``BACKBONES`` name. student_input_size: (H, W, C), empty: the registry default.
        student_weights: local weights file for it. init: ``pretrained`` or ``random``.
        task: empty: the teacher's (expr or au). dataset, data_root: empty: the teacher's.
        embedding_dim, dropout: the student's embedding, as in ``FinetuneConfig``.
        temperature: T. alpha: weight of the soft loss (1 - alpha: hard labels).
        embedding_weight: weight of the embedding-matching loss (0: off).
        epochs: training epochs (every student layer trains).
        bench_images: crops timed for the student's and the teacher's images/s.
        Other fields: :class:`CropRunFields`.
    """

    teacher: str = ""
    student: str = "mobilenetv2"
    student_input_size: tuple = (64, 64, 3)
    student_weights: str = ""
    init: str = "pretrained"
    dataset: str = ""
    data_root: str = ""
    task: str = ""
    embedding_dim: int = 0
    dropout: float = 0.0
    temperature: float = 4.0
    alpha: float = 0.7
    embedding_weight: float = 0.0
    epochs: int = 5
    bench_images: int = 512

    def validate(self) -> "DistillConfig":
        from extract.backbones import BACKBONES

        if not self.teacher:
            raise ConfigError("--teacher is required: a fine-tuning run folder (make finetune writes one)")
        if self.student not in BACKBONES:
            raise ConfigError(
                f"--student {self.student!r} is not a backbone; choose one of: {', '.join(sorted(BACKBONES))}"
            )
        _check_common(self)
        checks = [
            ("init", self.init in INITS, f"must be one of {', '.join(INITS)}"),
            (
                "task",
                self.task in TASKS and TASKS[self.task].labels.kind in ("class", "multilabel"),
                "must be a class or multilabel task (softened outputs, e.g. expr or au); va has no temperature",
            ),
            ("temperature", self.temperature > 0, "must be > 0"),
            ("alpha", 0 <= self.alpha <= 1, "must be in [0, 1]"),
            ("embedding_weight", self.embedding_weight >= 0, "must be >= 0"),
            ("epochs", self.epochs >= 1, "must be >= 1"),
            ("bench_images", self.bench_images >= 1, "must be >= 1"),
        ]
        _raise_first(self, checks)
        return self


def _check_common(cfg) -> None:
    from train.rebalance import REBALANCE

    if cfg.task not in frame_tasks():
        raise ConfigError(
            f"--task {cfg.task!r}: fine-tuning needs per-frame labels; choose one of: {', '.join(frame_tasks())}"
        )
    REBALANCE[cfg.rebalance]
    checks = [
        ("batch_size", cfg.batch_size >= 1, "must be >= 1"),
        ("lr", cfg.lr > 0, "must be > 0"),
        ("dropout", 0 <= cfg.dropout < 1, "must be in [0, 1)"),
        ("train_frames", cfg.train_frames >= 0, "must be >= 0 (0: all)"),
        ("val_frames", cfg.val_frames >= 0, "must be >= 0 (0: all)"),
        ("shift", 0 <= cfg.shift < 0.5, "must be in [0, 0.5)"),
        ("rotation", 0 <= cfg.rotation <= 45, "must be in [0, 45] degrees"),
        ("brightness", 0 <= cfg.brightness < 1, "must be in [0, 1)"),
        ("undersample_cap", cfg.undersample_cap >= 1, "must be >= 1 (1: balanced)"),
        ("val_fraction", 0 < cfg.val_fraction < 1, "must be in (0, 1)"),
        ("workers", cfg.workers >= 1, "must be >= 1"),
    ]
    _raise_first(cfg, checks)


def _raise_first(cfg, checks) -> None:
    for name, ok, why in checks:
        if not ok:
            raise ConfigError(f"--{name.replace('_', '-')} {why}, got {getattr(cfg, name)!r}")
