"""The training configuration: every setting of one stage-two run, as one frozen dataclass.

``config.json`` in the run folder is its ``dataclasses.asdict`` plus the versions and the cache it
read (``core.run_folder``); ``python -m train``'s flags are generated from its fields
(``core.config.add_fields``).

>>> cfg = TrainConfig(dataset="synthetic", model="gru", task="expr", epochs=5)
>>> cfg.resolved().data_root
'data/synthetic'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from core.config import DEFAULT_BACKBONE, NO_BACKBONE, DataFields, RunFields
from core.registry import ConfigError
from extract.cache import audio_cache_name
from train.streaming import DEFAULT_MAX_RAM_GB


@dataclass(frozen=True)
class TrainConfig(DataFields, RunFields):
    """Every setting of one training run (CLI flags and make variables mirror the field names).

    Args:
        backbone: the cache to read, ``<cache_dir>/<dataset>/<backbone>.h5`` (BACKBONE).
        model: a name of ``train.models.MODELS`` (MODEL).
        task: a name of ``core.tasks.TASKS`` (TASK).
        rebalance: a name of ``train.rebalance.REBALANCE`` (REBALANCE); training split only.
        seq_len: frames per window. stride: step between training windows (0: ``seq_len // 2``).
        epochs, batch_size, lr: optimisation (Adam). patience: EarlyStopping epochs without a
            better validation metric.
        layers, units, dropout: model size; dropout sits between layers.
        val_fraction: share of subjects held out when the split column has no validation split.
        undersample_cap: ``undersample`` keeps at most ``cap x`` the rarest class count per class
            (1.0: exactly balanced).
        va_bins: bins per axis of the (valence, arousal) histogram (``va-hist``, va ``undersample``).
        eri_loss: ``mse`` or ``pearson`` (1 - Pearson) for the eri task.
        jit_compile: ``auto``, ``on`` or ``off`` (XLA for the train step).
        max_ram_gb: a split whose embeddings (float16) exceed this many GB is not read into RAM: its
            windows stream from the cache, the same windows in the same order (``train.streaming``).
        audio: AUDIO: an audio extractor of ``extract.audio.AUDIO_FEATURES`` whose cache
            (``audio-<name>.h5``) joins the face embeddings frame by frame; empty: visual only. With
            ``backbone`` ``none``: an audio-only model.
        fusion: FUSION: how the two streams meet, a name of ``train.fusion.FUSIONS`` (early, model,
            late); used when both a backbone and ``audio`` are set.
        modality_dropout: the share of training windows that lose one stream (the face or the audio,
            half each), so the model still predicts when one is missing; audio-visual runs only.
        distribution: DISTRIBUTION: ``none`` (one device) or ``data``: ``keras.distribution.DataParallel``
            over every local accelerator (JAX backend; each batch is split over the devices; across
            hosts after ``keras.distribution.initialize`` from its ``KERAS_DISTRIBUTION_*`` variables).
    """

    backbone: str = DEFAULT_BACKBONE
    model: str = "gru"
    task: str = "expr"
    rebalance: str = "none"
    seq_len: int = 64
    stride: int = 0
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    patience: int = 5
    layers: int = 2
    units: int = 128
    dropout: float = 0.2
    val_fraction: float = 0.2
    undersample_cap: float = 1.0
    va_bins: int = 40
    eri_loss: str = "mse"
    jit_compile: str = "auto"
    max_ram_gb: float = DEFAULT_MAX_RAM_GB
    distribution: str = "none"
    audio: str = ""
    fusion: str = "model"
    modality_dropout: float = 0.2

    @property
    def cache_name(self) -> str:
        """The cache the run reads frame by frame: the backbone's, or the audio one for an audio-only run."""
        return audio_cache_name(self.audio) if self.backbone == NO_BACKBONE else self.backbone

    @property
    def fused(self) -> bool:
        """Both streams: face embeddings and audio features."""
        return bool(self.audio) and self.backbone != NO_BACKBONE

    @property
    def modalities(self) -> str:
        """``visual``, ``audio`` or ``audio-visual``: the report's column."""
        return "audio-visual" if self.fused else "audio" if self.backbone == NO_BACKBONE else "visual"

    def resolved(self) -> "TrainConfig":
        """The config with derived defaults filled in (what ``config.json`` records)."""
        return dataclasses.replace(self, data_root=self.root(), stride=self.stride or max(self.seq_len // 2, 1))

    def validate(self) -> "TrainConfig":
        """Checks names against the registries and numbers against their ranges; returns self."""
        from core.tasks import TASKS
        from extract.backbones import check_name
        from train.models import MODELS
        from train.rebalance import REBALANCE

        MODELS[self.model]
        TASKS[self.task]
        REBALANCE[self.rebalance]
        if self.backbone == NO_BACKBONE and not self.audio:
            raise ConfigError("--backbone none trains on audio alone: give --audio (AUDIO=logmel), or a backbone")
        if self.backbone != NO_BACKBONE:
            check_name(self.backbone)  # before the cache lookup, whose advice (make extract) would not help
        if self.audio:
            from extract.audio import check_audio_name
            from train.fusion import FUSIONS

            check_audio_name(self.audio)
            FUSIONS[self.fusion]
        positive = {
            "seq_len": self.seq_len,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "layers": self.layers,
            "units": self.units,
            "va_bins": self.va_bins,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        checks = [
            ("stride", 0 <= self.stride, "must be >= 0 (0: seq_len // 2)"),
            ("lr", self.lr > 0, "must be > 0"),
            ("dropout", 0 <= self.dropout < 1, "must be in [0, 1)"),
            ("val_fraction", 0 < self.val_fraction < 1, "must be in (0, 1)"),
            ("undersample_cap", self.undersample_cap >= 1, "must be >= 1 (1: balanced)"),
            ("eri_loss", self.eri_loss in ("mse", "pearson"), "must be mse or pearson"),
            ("jit_compile", self.jit_compile in ("auto", "on", "off"), "must be auto, on or off"),
            ("patience", self.patience >= 0, "must be >= 0"),
            ("distribution", self.distribution in ("none", "data"), "must be none or data"),
            ("max_ram_gb", self.max_ram_gb > 0, "must be > 0"),
            ("modality_dropout", 0 <= self.modality_dropout < 1, "must be in [0, 1)"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')} {why}, got {getattr(self, name)!r}")
        if self.distribution == "data":
            import keras

            if keras.backend.backend() != "jax":
                raise ConfigError(
                    f"--distribution data needs the JAX backend: set KERAS_BACKEND=jax (now {keras.backend.backend()})"
                )
        return self
