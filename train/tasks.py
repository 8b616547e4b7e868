"""What each task predicts, its output head, its masked loss, and its predictions-table columns.

Targets travel as one float tensor ``y_true[..., C + 1]``: the C label columns (one class id for
class tasks) and, last, the loss mask (1: the frame counts). Every loss here reads the mask from
that column, so frames without a face, unannotated frames and frames dropped by rebalancing add
nothing to the loss or its gradient, on any backend.

Example:

>>> spec = TASKS["va"]
>>> spec.outputs, spec.activation, spec.monitor
(2, 'tanh', 'ccc_mean')
>>> loss = spec.make_loss(TrainConfig(task="va"))   # MaskedCCCLoss: 1 - mean CCC over the batch
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
from keras import ops

from data_manifests.schema import LABELS, LabelSpec
from evaluate.metrics import MONITOR
from train.config import Registry, TrainConfig

_EPS = 1e-7


def _split(y_true, y_pred):
    """Flattens leading axes: labels ``[M, C]``, mask ``[M]``, predictions ``[M, K]``."""
    width = y_true.shape[-1]
    y_true = ops.reshape(ops.cast(y_true, y_pred.dtype), (-1, width))
    return y_true[:, :-1], y_true[:, -1], ops.reshape(y_pred, (-1, y_pred.shape[-1]))


def _masked_mean(values, mask):
    return ops.sum(values * mask) / ops.maximum(ops.sum(mask), 1.0)


class _MaskedLoss(keras.losses.Loss):
    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name or type(self).__name__, reduction=reduction, dtype=dtype)


@keras.saving.register_keras_serializable(package="train")
class MaskedCCCLoss(_MaskedLoss):
    """``1 - mean_k CCC_k`` over the masked frames of the batch (one CCC per output column)."""

    def call(self, y_true, y_pred):
        labels, mask, pred = _split(y_true, y_pred)
        m = mask[:, None]
        n = ops.maximum(ops.sum(m), 1.0)
        mp = ops.sum(pred * m, axis=0) / n
        ml = ops.sum(labels * m, axis=0) / n
        dp, dl = (pred - mp) * m, (labels - ml) * m
        cov = ops.sum(dp * dl, axis=0) / n
        var_p = ops.sum(dp * dp, axis=0) / n
        var_l = ops.sum(dl * dl, axis=0) / n
        concordance = 2 * cov / (var_p + var_l + ops.square(mp - ml) + _EPS)
        return 1.0 - ops.mean(concordance)


@keras.saving.register_keras_serializable(package="train")
class MaskedPearsonLoss(_MaskedLoss):
    """``1 - mean_k Pearson_k`` over the masked rows of the batch."""

    def call(self, y_true, y_pred):
        labels, mask, pred = _split(y_true, y_pred)
        m = mask[:, None]
        n = ops.maximum(ops.sum(m), 1.0)
        dp = (pred - ops.sum(pred * m, axis=0) / n) * m
        dl = (labels - ops.sum(labels * m, axis=0) / n) * m
        r = ops.sum(dp * dl, axis=0) / ops.sqrt(ops.sum(dp * dp, axis=0) * ops.sum(dl * dl, axis=0) + _EPS)
        return 1.0 - ops.mean(r)


@keras.saving.register_keras_serializable(package="train")
class MaskedSparseCELoss(_MaskedLoss):
    """Categorical cross-entropy of softmax outputs, averaged over the masked frames."""

    def call(self, y_true, y_pred):
        labels, mask, pred = _split(y_true, y_pred)
        ce = ops.sparse_categorical_crossentropy(ops.cast(labels[:, 0], "int32"), pred)
        return _masked_mean(ce, mask)


@keras.saving.register_keras_serializable(package="train")
class MaskedBCELoss(_MaskedLoss):
    """Binary cross-entropy of sigmoid outputs, mean over outputs, averaged over masked frames."""

    def call(self, y_true, y_pred):
        labels, mask, pred = _split(y_true, y_pred)
        bce = ops.mean(ops.binary_crossentropy(labels, pred), axis=-1)
        return _masked_mean(bce, mask)


@keras.saving.register_keras_serializable(package="train")
class MaskedMSELoss(_MaskedLoss):
    """Squared error, mean over outputs, averaged over the masked rows."""

    def call(self, y_true, y_pred):
        labels, mask, pred = _split(y_true, y_pred)
        return _masked_mean(ops.mean(ops.square(pred - labels), axis=-1), mask)


@dataclass(frozen=True)
class TaskSpec:
    """One task: its labels (``data_manifests.schema.LABELS``), output head and loss.

    Args:
        name: the TASK value.
        labels: the task's LabelSpec (names, kind, invalid marker, frame or clip level).
        activation: of the output Dense layer.
        make_loss: ``cfg -> keras.losses.Loss``.
        value_range: valid label values must lie in it (regression) or ``None``.
        description: one line for ``--help``.
    """

    name: str
    labels: LabelSpec
    activation: str
    make_loss: Callable[[TrainConfig], keras.losses.Loss]
    value_range: tuple[float, float] | None
    description: str

    @property
    def level(self) -> str:
        return self.labels.level

    @property
    def outputs(self) -> int:
        return len(self.labels.names)

    @property
    def target_cols(self) -> int:
        """Label columns in ``y_true`` (before the mask column): 1 class id for class tasks."""
        return 1 if self.labels.kind == "class" else self.outputs

    @property
    def monitor(self) -> str:
        return MONITOR[self.name]

    def encode(self, labels, n: int, where: str) -> np.ndarray:
        """Labels of one sample as float32 ``[n, target_cols]`` (n=1 for a clip label)."""
        arr = np.asarray(labels, np.float32)
        if arr.size != n * self.target_cols:
            raise ValueError(f"{where}: task '{self.name}' labels have shape {arr.shape}, expected "
                             f"{n} x {self.target_cols} values")
        return arr.reshape(n, self.target_cols)

    def check(self, values: np.ndarray, valid: np.ndarray, where: str) -> None:
        """Refuses annotated labels the output head cannot produce, naming the sample."""
        v = values[valid]
        if not v.size:
            return
        if not np.isfinite(v).all():
            raise ValueError(f"{where}: task '{self.name}' has non-finite labels marked valid")
        if self.labels.kind == "class":
            bad = (v < 0) | (v >= self.outputs) | (v != np.round(v))
            if bad.any():
                raise ValueError(f"{where}: class id {v[bad][0]} outside 0..{self.outputs - 1} "
                                 f"({', '.join(self.labels.names)})")
        elif self.labels.kind == "multilabel":
            if not np.isin(v, (0.0, 1.0)).all():
                raise ValueError(f"{where}: task '{self.name}' labels must be 0/1 where valid")
        elif self.value_range is not None:
            lo, hi = self.value_range
            if v.min() < lo or v.max() > hi:
                raise ValueError(f"{where}: task '{self.name}' labels must lie in [{lo}, {hi}], "
                                 f"found {v.min():.3f}..{v.max():.3f}")

    def prediction_columns(self, true: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
        """The task's columns of the predictions table (docs/run_format.md), in order."""
        names = self.labels.names
        if self.name == "va":
            return {"true_valence": true[:, 0], "true_arousal": true[:, 1],
                    "pred_valence": pred[:, 0], "pred_arousal": pred[:, 1]}
        if self.labels.kind == "class":
            cols = {"true": true[:, 0].astype(np.int64), "pred": pred.argmax(axis=1).astype(np.int64)}
            cols.update({f"prob_{n}": pred[:, k] for k, n in enumerate(names)})
            return cols
        if self.labels.kind == "multilabel":
            cols = {f"true_{n}": true[:, k].astype(np.int64) for k, n in enumerate(names)}
            cols.update({f"prob_{n}": pred[:, k] for k, n in enumerate(names)})
            cols.update({f"pred_{n}": (pred[:, k] >= 0.5).astype(np.int64) for k, n in enumerate(names)})
            return cols
        cols = {f"true_{n}": true[:, k] for k, n in enumerate(names)}
        cols.update({f"pred_{n}": pred[:, k] for k, n in enumerate(names)})
        return cols


TASKS: Registry[TaskSpec] = Registry("task", "--task / TASK")
TASKS.register("va", TaskSpec(
    "va", LABELS["va"], "tanh", lambda cfg: MaskedCCCLoss(), (-1.0, 1.0),
    "valence and arousal per frame, tanh outputs, loss 1 - CCC (metric ccc_mean)"))
TASKS.register("expr", TaskSpec(
    "expr", LABELS["expr"], "softmax", lambda cfg: MaskedSparseCELoss(), None,
    "8 expression classes per frame, masked cross-entropy (metric f1_macro)"))
TASKS.register("au", TaskSpec(
    "au", LABELS["au"], "sigmoid", lambda cfg: MaskedBCELoss(), None,
    "12 action units per frame, sigmoid, masked binary cross-entropy (metric au_f1_mean)"))
TASKS.register("eri", TaskSpec(
    "eri", LABELS["eri"], "sigmoid",
    lambda cfg: MaskedPearsonLoss() if cfg.eri_loss == "pearson" else MaskedMSELoss(), (0.0, 1.0),
    "7 reaction intensities in [0, 1] per clip, sigmoid, loss MSE or 1 - Pearson (metric pearson_mean)"))
TASKS.register("clip", TaskSpec(
    "clip", LABELS["clip"], "softmax", lambda cfg: MaskedSparseCELoss(), None,
    "one class per clip (AFEW), outputs pooled over time, cross-entropy (metric f1_macro)"))
