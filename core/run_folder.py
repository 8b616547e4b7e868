"""The run folder: its file names, its writer and its reader (the format is docs/run_format.md).

Every training entry point (``train``, ``finetune train|distill|joint``) writes through
:class:`RunFolder`: :meth:`RunFolder.create` makes the folder, :meth:`RunFolder.start` writes the
resolved config, :meth:`RunFolder.callbacks` checkpoints the best epoch and logs the history, and
:meth:`RunFolder.finish` scores the best model and writes the predictions and ``metrics.json``.
``make report`` and ``make predict`` read through it (:meth:`RunFolder.resolve`,
:meth:`RunFolder.read_config`, :meth:`RunFolder.read_metrics`, :meth:`RunFolder.best_epoch`).

Example::

    folder = RunFolder.create("runs", "synthetic-fer-expr-gru-none-s0-20250101-120000")
    folder.start(cfg, cache="cache/synthetic/fer.h5")
    model.fit(data, callbacks=[scorer, *folder.callbacks("val_f1_macro")])
    metrics = folder.finish(model, "val_f1_macro", score)   # score(best) -> (metrics, predictions)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from core.scores import json_safe

log = logging.getLogger(__name__)

CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.csv"
MODEL = "model.keras"
LABEL_DISTRIBUTION = "label_distribution.json"
PREDICTIONS = "predictions_validation.csv"
LOGS = "logs"
EMBEDDING_LAYER = "embedding_layer.txt"
BACKUP = "backup"  # keras.callbacks.BackupAndRestore's folder while a run trains; gone once it finished
# The files the report draws its figures from.
FIGURE_SOURCES = (HISTORY, LABEL_DISTRIBUTION, PREDICTIONS, METRICS)


class RunFolderError(ValueError):
    """A run folder that cannot be used; the message names the path and the fix."""


def predictions_dir(split: str) -> str:
    """``make predict``'s output folder name for ``split``."""
    return f"predictions_{split}"


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


class RunFolder:
    """One ``<RUNS_DIR>/<run id>/`` folder.

    >>> RunFolder("runs/x").model_path.as_posix()
    'runs/x/model.keras'
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    config_path = property(lambda self: self.path / CONFIG)
    metrics_path = property(lambda self: self.path / METRICS)
    history_path = property(lambda self: self.path / HISTORY)
    model_path = property(lambda self: self.path / MODEL)
    predictions_path = property(lambda self: self.path / PREDICTIONS)
    distribution_path = property(lambda self: self.path / LABEL_DISTRIBUTION)
    logs_dir = property(lambda self: self.path / LOGS)
    backup_dir = property(lambda self: self.path / BACKUP)

    @classmethod
    def create(cls, runs_dir: str | Path, name: str) -> "RunFolder":
        """Creates ``<runs_dir>/<name>``; never reuses one (a second run in the same second gets ``-2``)."""
        base = Path(runs_dir) / name
        for k in range(1, 1000):
            path = base if k == 1 else base.with_name(f"{base.name}-{k}")
            try:
                base.parent.mkdir(parents=True, exist_ok=True)
                path.mkdir()
                return cls(path)
            except FileExistsError:
                continue
            except OSError as err:
                raise RunFolderError(
                    f"{runs_dir}: cannot create the run folder ({err.strerror}); make RUNS_DIR writable or "
                    f"choose another one"
                ) from err
        raise FileExistsError(f"{base}: 999 runs with this name exist; choose another --run-name")

    @classmethod
    def resolve(cls, run: str, runs_dir: str | Path) -> "RunFolder":
        """A run id under ``runs_dir`` (or a path to a run folder); errors list the runs there."""
        direct = Path(run)
        path = direct if (direct / CONFIG).is_file() else Path(runs_dir) / run
        if not (path / CONFIG).is_file():
            have = sorted(p.parent.name for p in Path(runs_dir).glob(f"*/{CONFIG}")) if Path(runs_dir).is_dir() else []
            listing = f"{len(have)} runs there, e.g. {', '.join(have[:5])}" if have else "no runs there"
            raise FileNotFoundError(
                f"{path}: no run folder with a {CONFIG} (RUN={run}, RUNS_DIR={runs_dir}); {listing}"
            )
        return cls(path)

    @classmethod
    def interrupted(cls, runs_dir: str | Path, cfg) -> "RunFolder | None":
        """The newest run folder of ``runs_dir`` that trained with exactly ``cfg`` and was killed before
        it finished (a ``backup/`` and no ``metrics.json``): the same command continues it there."""
        want = json.loads(json.dumps(dataclasses.asdict(cfg)))
        found = []
        for config in Path(runs_dir).glob(f"*/{CONFIG}") if Path(runs_dir).is_dir() else []:
            folder = cls(config.parent)
            if not folder.backup_dir.is_dir() or folder.metrics_path.exists():
                continue
            try:
                have = folder.read_config()
            except ValueError:
                continue
            if {k: have.get(k) for k in want} == want:
                found.append((config.stat().st_mtime, folder))
        return max(found, key=lambda item: item[0])[1] if found else None

    def resume_point(self, monitor: str) -> dict:
        """Where an interrupted run continues: ``epoch`` (0: from the start), and the state the
        callbacks had there (``best`` value of ``monitor`` and epochs ``wait``-ed since it).

        ``history.csv`` is cut to the epochs the backup holds, so an epoch the kill interrupted after
        it was logged is not logged twice.
        """
        meta = self.backup_dir / "training_metadata.json"
        epoch = int(json.loads(meta.read_text())["epoch"]) if meta.is_file() else 0
        if not epoch or not self.history_path.is_file():
            return {"epoch": 0, "best": None, "wait": 0}
        history = self.read_history()
        history = history[history["epoch"] < epoch]
        history.to_csv(self.history_path, index=False)
        values = history[monitor].to_numpy(float) if monitor in history else np.array([])
        if not np.isfinite(values).any():
            return {"epoch": epoch, "best": None, "wait": 0}
        best = int(np.nanargmax(values))
        return {"epoch": epoch, "best": float(values[best]), "wait": len(values) - 1 - best}

    def backup(self):
        """``keras.callbacks.BackupAndRestore`` in this folder: weights, optimizer and epoch after
        every epoch, restored by ``fit`` when the run is continued."""
        import keras

        return keras.callbacks.BackupAndRestore(str(self.backup_dir), save_freq="epoch", delete_checkpoint=False)

    def start(self, cfg, **extra) -> dict:
        """Writes ``config.json``: the resolved config's fields, the Keras version and backend, ``extra``."""
        import keras

        config = {
            **dataclasses.asdict(cfg),
            "keras_version": keras.__version__,
            "backend": keras.backend.backend(),
            **extra,
        }
        write_json(self.config_path, config)
        log.info("run folder %s", self.path)
        return config

    def write_distribution(self, dist: dict) -> None:
        write_json(self.distribution_path, dist)

    def callbacks(self, monitor: str, append: bool = False, best: float | None = None) -> list:
        """The best model by ``monitor`` (max) to ``model.keras`` and every epoch to ``history.csv``.

        ``append``: keep the rows of earlier ``fit`` calls (training in phases, a continued run).
        ``best``: the best value so far (a continued run), which a new checkpoint must beat.
        """
        import keras

        return [
            keras.callbacks.ModelCheckpoint(
                str(self.model_path), monitor=monitor, mode="max", save_best_only=True, initial_value_threshold=best
            ),
            keras.callbacks.CSVLogger(str(self.history_path), append=append),
        ]

    def finish(self, model, monitor: str, score: Callable, extra: Callable | None = None) -> dict:
        """Scores the best saved model and writes ``predictions_validation.csv`` and ``metrics.json``.

        Args:
            model: the model trained; saved as ``model.keras`` when ``monitor`` was never finite.
            monitor: the ``val_<metric>`` the checkpoint followed.
            score: ``best model -> (metrics, predictions table)``.
            extra: ``best model -> more metrics`` (after ``epochs_run`` and ``best_epoch``).

        Returns:
            The metrics written.
        """
        import keras

        if not self.model_path.exists():
            log.warning("%s was never finite: saving the last epoch's model", monitor)
            model.save(self.model_path)
        best = keras.saving.load_model(self.model_path, safe_mode=True, compile=False)
        metrics, predictions = score(best)
        predictions.to_csv(self.predictions_path, index=False)
        metrics.update(self.best_epoch(monitor))
        if extra is not None:
            metrics.update(extra(best))
        self.write_metrics(metrics)
        shutil.rmtree(self.backup_dir, ignore_errors=True)  # finished: nothing to continue
        return metrics

    def write_metrics(self, metrics: dict) -> None:
        write_json(self.metrics_path, json_safe(metrics))

    def best_epoch(self, monitor: str) -> dict:
        """``epochs_run`` and ``best_epoch`` (0-based, -1: never finite) from ``history.csv``."""
        history = pd.read_csv(self.history_path)
        values = history[monitor].to_numpy(float) if monitor in history else np.array([])
        return {
            "epochs_run": int(len(history)),
            "best_epoch": int(np.nanargmax(values)) if np.isfinite(values).any() else -1,
        }

    def read_config(self) -> dict:
        return self._read_object(self.config_path)

    def read_metrics(self) -> dict:
        return self._read_object(self.metrics_path)

    def read_distribution(self) -> dict:
        return self._read_object(self.distribution_path)

    def read_history(self) -> pd.DataFrame:
        return pd.read_csv(self.history_path)

    def read_predictions(self) -> pd.DataFrame:
        return pd.read_csv(self.predictions_path)

    @staticmethod
    def _read_object(path: Path) -> dict:
        value = json.loads(path.read_text())
        if not isinstance(value, dict):
            raise RunFolderError(
                f"{path}: holds a JSON {type(value).__name__}, not an object; "
                f"the run wrote it badly or it was edited: train the run again"
            )
        return value
