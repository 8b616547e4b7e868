"""Tasks: one entry holds everything a task means, and every stage reads it from here.

A :class:`TaskSpec` says what the task's labels are (names, kind, invalid marker, frame or clip
level: a ``data_manifests.schema.LabelSpec``), its output layer and loss, the metric the checkpoint
follows and the headline metrics of the report, how a predictions table is scored, its columns,
its ABAW submission file, what rebalancing groups by and which figures it gets. ``train``,
``finetune`` and ``evaluate`` read it; it imports none of them. Adding a task is one
``TASKS.register`` call (``tests/test_tasks.py`` registers a toy task and runs train -> predict ->
report on it); the behaviour of each label kind (class, multilabel, regression) is in
:mod:`core.task_kinds`.

>>> spec = TASKS["va"]
>>> spec.outputs, spec.activation, spec.monitor, spec.level
(2, 'tanh', 'ccc_mean', 'frame')
>>> spec.column_names()
['true_valence', 'true_arousal', 'pred_valence', 'pred_arousal']
>>> TASKS["au"].submission_header().split(",")[:3]
['image_location', 'AU1', 'AU2']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from core import task_kinds as kinds
from core.registry import Registry
from data_manifests.schema import LABELS, LabelSpec

PREFIX_COLUMNS = ["sample_id", "frame_index", "face", "valid"]


@dataclass(frozen=True)
class TaskSpec:
    """One task (the TASK value). Fields are keywords; defaults follow the label kind.

    Args:
        name: the TASK value.
        labels: names, kind (class, multilabel, regression), invalid marker, level (frame, clip).
        activation: of the output Dense layer.
        loss: ``cfg -> name of a loss class in core.losses`` (the config can choose, as eri does).
        monitor: the metric (higher is better) that checkpointing and early stopping follow.
        headline: the metrics the report's tables show, the monitor first.
        score: ``(task, scored rows) -> metrics``; ``core.task_kinds`` has one per metric family.
        grouping: what ``REBALANCE=undersample`` groups units by and how the label distribution
            is counted (``core.task_kinds.BY_CLASS`` ...).
        description: one line for ``--help``.
        value_range: valid regression labels lie in it; None: any finite value.
        threshold: multilabel: probability at or above which a label is predicted 1.
        submission: writes an ABAW submission file (``make predict``; frame tasks).
        circumplex: the labels are (valence, arousal) in [-1, 1] (``va-hist``, the time plot).
        plots: the task's figures in the report: ``confusion``, ``va_time``.
        formula: how the monitor is computed, in words; the report states it beside the scores.
    """

    name: str
    labels: LabelSpec
    activation: str
    loss: Callable[[Any], str]
    monitor: str
    headline: tuple[str, ...]
    score: Callable[["TaskSpec", pd.DataFrame], dict]
    grouping: kinds.Grouping
    description: str
    value_range: tuple[float, float] | None = None
    threshold: float = 0.5
    submission: bool = False
    circumplex: bool = False
    plots: tuple[str, ...] = ()
    formula: str = ""

    @property
    def level(self) -> str:
        return self.labels.level

    @property
    def unit(self) -> str:
        """What one scored row is: ``frames`` or ``clips``."""
        return "frames" if self.level == "frame" else "clips"

    @property
    def outputs(self) -> int:
        return len(self.labels.names)

    @property
    def target_cols(self) -> int:
        """Label columns in ``y_true`` (before the mask column): 1 class id for class tasks."""
        return 1 if self.labels.kind == "class" else self.outputs

    def make_loss(self, cfg):
        """The task's masked loss (``core.losses``) for a config with the fields ``loss`` reads."""
        from core import losses

        return getattr(losses, self.loss(cfg))()

    def encode(self, labels, n: int, where: str) -> np.ndarray:
        """Labels of one sample as float32 ``[n, target_cols]`` (n=1 for a clip label)."""
        arr = np.asarray(labels, np.float32)
        if arr.size != n * self.target_cols:
            raise ValueError(
                f"{where}: task '{self.name}' labels have shape {arr.shape}, expected {n} x {self.target_cols} values"
            )
        return arr.reshape(n, self.target_cols)

    def check(self, values: np.ndarray, valid: np.ndarray, where: str) -> None:
        """Refuses annotated labels the output head cannot produce, naming the sample."""
        v = values[valid]
        if not v.size:
            return
        if not np.isfinite(v).all():
            raise ValueError(f"{where}: task '{self.name}' has non-finite labels marked valid")
        kinds.KINDS[self.labels.kind].check(self, v, where)

    def prediction_columns(self, true: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
        """The task's columns of the predictions table (docs/run_format.md), in order."""
        return kinds.KINDS[self.labels.kind].columns(self, true, pred)

    def column_names(self) -> list[str]:
        """The names :meth:`prediction_columns` writes, in order."""
        return list(self.prediction_columns(np.zeros((1, self.target_cols)), np.zeros((1, self.outputs))))

    def scored_rows(self, df: pd.DataFrame) -> pd.DataFrame:
        """The rows that count: annotated and with a face. Raises when a documented column is missing."""
        missing = [c for c in PREFIX_COLUMNS + self.column_names() if c not in df.columns]
        if missing:
            raise ValueError(
                f"predictions table for task '{self.name}' lacks columns {missing}; see docs/run_format.md"
            )
        return df[(df["valid"].astype(int) == 1) & (df["face"].astype(int) == 1)]

    def metrics(self, df: pd.DataFrame, model: str = "") -> dict:
        """Flat metrics of one predictions table (the keys of ``metrics.json``).

        ``task``, ``model``, ``n_frames`` (rows scored: annotated, with a face), ``n_no_face``
        (annotated rows left out for lack of a face), then :attr:`score`'s keys. Undefined scores
        (no rows, constant series) are NaN.
        """
        rows = self.scored_rows(df)
        valid_all = df[df["valid"].astype(int) == 1]
        out: dict = {
            "task": self.name,
            "model": model,
            "n_frames": int(len(rows)),
            "n_no_face": int(len(valid_all) - len(rows)),
        }
        out.update(self.score(self, rows))
        return out

    def frame_outputs(self, pred: np.ndarray) -> dict[str, np.ndarray]:
        """``make predict``'s per-video (or per-clip) output columns of ``pred [N, K]``."""
        return kinds.KINDS[self.labels.kind].outputs(self, pred)

    def submission_header(self) -> str:
        """The ABAW header line: ``image_location`` and the label names."""
        return ",".join(("image_location",) + self.labels.names)

    def submission_values(self, pred: np.ndarray) -> dict[str, np.ndarray]:
        """The ABAW row values of ``pred [N, K]``: the class index, 0/1 per label, or the values."""
        return kinds.KINDS[self.labels.kind].submission(self, pred)

    def rebalance_groups(self, labels: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        """The ``undersample`` group of each unit; ``-1`` where not eligible."""
        labels = np.asarray(labels, np.float64)
        return np.where(eligible, self.grouping.groups(labels, np.asarray(eligible, bool)), -1)

    def label_distribution(self, labels: np.ndarray, mask: np.ndarray, bins: int) -> dict:
        """Counts of the units in ``mask`` (``label_distribution.json``'s before/after)."""
        labels = np.asarray(labels, np.float64)[np.asarray(mask, bool)]
        return {"units": int(labels.shape[0]), **self.grouping.distribution(self.labels.names, labels, bins)}


def class_task(name: str, labels: LabelSpec, description: str, **fields) -> TaskSpec:
    """A classification task: softmax, masked cross-entropy, macro F1 and accuracy, a confusion
    matrix, undersampling by class; ``fields`` override any of them (``submission=True``, ...)."""
    return TaskSpec(
        **{
            "name": name,
            "labels": labels,
            "activation": "softmax",
            "loss": lambda cfg: "MaskedSparseCELoss",
            "monitor": "f1_macro",
            "headline": ("f1_macro", "accuracy"),
            "score": kinds.class_scores,
            "grouping": kinds.BY_CLASS,
            "plots": ("confusion",),
            "description": description,
            "formula": (
                f"f1_macro = the F1 of each of the {len(labels.names)} classes, summed and divided by "
                f"{len(labels.names)} (ABAW; a class that neither the labels nor the predictions contain counts "
                "0); f1_present = sklearn's macro F1 over the classes present only; accuracy"
            ),
            **fields,
        }
    )


TASKS: Registry[TaskSpec] = Registry("task", "--task / TASK")
TASKS.register(
    "va",
    TaskSpec(
        name="va",
        labels=LABELS["va"],
        activation="tanh",
        loss=lambda cfg: "MaskedCCCLoss",
        monitor="ccc_mean",
        headline=("ccc_mean", "ccc_valence", "ccc_arousal", "pearson_valence", "pearson_arousal"),
        score=kinds.ccc_scores("ccc_mean"),
        grouping=kinds.BY_QUADRANT,
        value_range=(-1.0, 1.0),
        submission=True,
        circumplex=True,
        plots=("va_time",),
        formula="ccc_mean = (CCC valence + CCC arousal) / 2 (ABAW VA), CCC with population moments",
        description="valence and arousal per frame, tanh outputs, loss 1 - CCC (metric ccc_mean)",
    ),
)
TASKS.register(
    "expr",
    class_task(
        "expr",
        LABELS["expr"],
        "8 expression classes per frame, masked cross-entropy (metric f1_macro)",
        submission=True,
    ),
)
TASKS.register(
    "au",
    TaskSpec(
        name="au",
        labels=LABELS["au"],
        activation="sigmoid",
        loss=lambda cfg: "MaskedBCELoss",
        monitor="au_f1_mean",
        headline=("au_f1_mean",),
        score=kinds.label_f1_scores("au_f1_mean"),
        grouping=kinds.BY_RAREST_LABEL,
        submission=True,
        plots=("confusion",),
        formula="au_f1_mean = the binary F1 of each of the 12 AUs at probability >= 0.5, summed and divided by 12 "
        "(ABAW AU; an AU never active nor predicted counts 0)",
        description="12 action units per frame, sigmoid, masked binary cross-entropy (metric au_f1_mean)",
    ),
)
TASKS.register(
    "clip",
    class_task(
        "clip", LABELS["clip"], "one class per clip (AFEW), outputs pooled over time, cross-entropy (metric f1_macro)"
    ),
)
TASKS.register(
    "eri",
    TaskSpec(
        name="eri",
        labels=LABELS["eri"],
        activation="sigmoid",
        loss=lambda cfg: "MaskedPearsonLoss" if cfg.eri_loss == "pearson" else "MaskedMSELoss",
        monitor="pearson_mean",
        headline=("pearson_mean",),
        score=kinds.pearson_scores("pearson_mean"),
        grouping=kinds.BY_DOMINANT,
        value_range=(0.0, 1.0),
        formula="pearson_mean = the Pearson correlation of each of the 7 intensities, summed and divided by 7 "
        "(ABAW5 ERI); undefined (empty) when a prediction or label column is constant",
        description="7 reaction intensities in [0, 1] per clip, sigmoid, loss MSE or 1 - Pearson (metric pearson_mean)",
    ),
)
