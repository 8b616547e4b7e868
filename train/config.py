"""The training configuration and the small registry type that MODELS, TASKS and REBALANCE use.

A run is fully described by one frozen :class:`TrainConfig`; ``config.json`` in the run folder is
its ``dataclasses.asdict`` plus the versions and the cache it read.

Example:

>>> cfg = TrainConfig(dataset="synthetic", model="gru", task="expr", epochs=5)
>>> cfg.resolved().data_root
'data/synthetic'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the setting and the valid values."""


class Registry(Generic[T]):
    """An ordered name -> entry table whose lookup error lists every valid name.

    Args:
        kind: what the entries are ("model", "task", ...), used in error messages.
        flag: the CLI flag (and make variable) that selects an entry.

    Adding an entry is one call: ``MODELS.register("tcn", ModelSpec(...))``.
    """

    def __init__(self, kind: str, flag: str):
        self.kind = kind
        self.flag = flag
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ConfigError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} '{name}' ({self.flag}); choose one of: {', '.join(self)}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self):
        return self._entries.items()


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run (CLI flags and make variables mirror the field names).

    Args:
        dataset: a name of ``data_manifests.loader.DATASETS`` (DATASET).
        data_root: where the dataset lives (DATA_ROOT); empty: ``data/<dataset>``.
        backbone: the cache to read, ``<cache_dir>/<dataset>/<backbone>.h5`` (BACKBONE).
        model: a name of ``train.models.MODELS`` (MODEL).
        task: a name of ``train.tasks.TASKS`` (TASK).
        cache_dir: CACHE_DIR. runs_dir: RUNS_DIR, where ``<run_id>/`` is written.
        rebalance: a name of ``train.rebalance.REBALANCE`` (REBALANCE); training split only.
        seq_len: frames per window. stride: step between training windows (0: ``seq_len // 2``).
        epochs, batch_size, lr: optimisation (Adam). patience: EarlyStopping epochs without a
            better validation metric.
        layers, units, dropout: model size; dropout sits between layers.
        seed: seeds Python, NumPy, the backend, window order and rebalancing.
        val_fraction: share of subjects held out when the split column has no validation split.
        undersample_cap: ``undersample`` keeps at most ``cap x`` the rarest class count per class
            (1.0: exactly balanced).
        va_bins: bins per axis of the (valence, arousal) histogram (``va-hist``, va ``undersample``).
        eri_loss: ``mse`` or ``pearson`` (1 - Pearson) for the eri task.
        jit_compile: ``auto``, ``on`` or ``off`` (XLA for the train step).
        run_name: the run folder name; empty: ``<dataset>-<backbone>-<task>-<model>-<rebalance>-s<seed>-<time>``.
        verbose: Keras fit verbosity (0, 1, 2).
    """

    dataset: str = "synthetic"
    data_root: str = ""
    backbone: str = "fer"
    model: str = "gru"
    task: str = "expr"
    cache_dir: str = "cache"
    runs_dir: str = "runs"
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
    seed: int = 0
    val_fraction: float = 0.2
    undersample_cap: float = 1.0
    va_bins: int = 40
    eri_loss: str = "mse"
    jit_compile: str = "auto"
    run_name: str = ""
    verbose: int = 2

    def resolved(self) -> "TrainConfig":
        """The config with derived defaults filled in (what ``config.json`` records)."""
        return dataclasses.replace(
            self,
            data_root=self.data_root or f"data/{self.dataset}",
            stride=self.stride or max(self.seq_len // 2, 1))

    def validate(self) -> "TrainConfig":
        """Checks names against the registries and numbers against their ranges; returns self."""
        from train.models import MODELS
        from train.rebalance import REBALANCE
        from train.tasks import TASKS

        MODELS[self.model]
        TASKS[self.task]
        REBALANCE[self.rebalance]
        positive = {"seq_len": self.seq_len, "epochs": self.epochs, "batch_size": self.batch_size,
                    "layers": self.layers, "units": self.units, "va_bins": self.va_bins}
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
        ]
        for name, ok, why in checks:
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')} {why}, got {getattr(self, name)!r}")
        return self
