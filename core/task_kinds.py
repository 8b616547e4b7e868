"""What a task's label kind decides (class, multilabel, regression), and the pieces a task entry
picks: its scorer (``class_scores``, ``label_f1_scores``, ``ccc_scores``, ``pearson_scores``) and its
rebalancing grouping (``BY_CLASS``, ``BY_RAREST_LABEL``, ``BY_QUADRANT``, ``BY_DOMINANT``).

Every function takes the task entry (:class:`core.tasks.TaskSpec`) so that names, thresholds and
ranges come from it.

>>> BY_CLASS.groups(np.array([[2.0], [0.0]]), np.array([True, True])).tolist()
[2, 0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from core import scores


@dataclass(frozen=True)
class Kind:
    """The behaviour of one label kind.

    Args:
        check: ``(task, valid values, where)``: raises on labels the head cannot produce.
        columns: ``(task, true [N, C], pred [N, K]) -> predictions-table columns``.
        outputs: ``(task, pred) -> make predict's per-frame columns``.
        submission: ``(task, pred) -> the ABAW row values``.
    """

    check: Callable
    columns: Callable
    outputs: Callable
    submission: Callable


def _check_class(task, v, where):
    bad = (v < 0) | (v >= task.outputs) | (v != np.round(v))
    if bad.any():
        raise ValueError(
            f"{where}: class id {v[bad][0]} outside 0..{task.outputs - 1} ({', '.join(task.labels.names)})"
        )


def _check_multilabel(task, v, where):
    if not np.isin(v, (0.0, 1.0)).all():
        raise ValueError(f"{where}: task '{task.name}' labels must be 0/1 where valid")


def _check_regression(task, v, where):
    if task.value_range is not None:
        lo, hi = task.value_range
        if v.min() < lo or v.max() > hi:
            raise ValueError(
                f"{where}: task '{task.name}' labels must lie in [{lo}, {hi}], found {v.min():.3f}..{v.max():.3f}"
            )


def _columns_class(task, true, pred):
    cols = {"true": true[:, 0].astype(np.int64), "pred": pred.argmax(axis=1).astype(np.int64)}
    cols.update({f"prob_{n}": pred[:, k] for k, n in enumerate(task.labels.names)})
    return cols


def _columns_multilabel(task, true, pred):
    names = task.labels.names
    cols = {f"true_{n}": true[:, k].astype(np.int64) for k, n in enumerate(names)}
    cols.update({f"prob_{n}": pred[:, k] for k, n in enumerate(names)})
    cols.update({f"pred_{n}": (pred[:, k] >= task.threshold).astype(np.int64) for k, n in enumerate(names)})
    return cols


def _columns_regression(task, true, pred):
    names = task.labels.names
    cols = {f"true_{n}": true[:, k] for k, n in enumerate(names)}
    cols.update({f"pred_{n}": pred[:, k] for k, n in enumerate(names)})
    return cols


def _outputs_class(task, pred):
    names = task.labels.names
    cls = pred.argmax(axis=1).astype(np.int64)
    return {
        "class": cls,
        "class_name": np.asarray(names, dtype=object)[cls],
        **{f"prob_{n}": pred[:, k] for k, n in enumerate(names)},
    }


def _labels_01(task, pred):
    return {n: (pred[:, k] >= task.threshold).astype(np.int64) for k, n in enumerate(task.labels.names)}


def _outputs_multilabel(task, pred):
    return {**_labels_01(task, pred), **{f"prob_{n}": pred[:, k] for k, n in enumerate(task.labels.names)}}


def _values(task, pred):
    return {n: pred[:, k] for k, n in enumerate(task.labels.names)}


KINDS = {
    "class": Kind(
        _check_class, _columns_class, _outputs_class, lambda task, pred: {"class": pred.argmax(axis=1).astype(np.int64)}
    ),
    "multilabel": Kind(_check_multilabel, _columns_multilabel, _outputs_multilabel, _labels_01),
    "regression": Kind(_check_regression, _columns_regression, _values, _values),
}


def class_scores(task, rows: pd.DataFrame) -> dict:
    """``f1_macro`` (ABAW: the F1 of each class summed and divided by the class count),
    ``f1_present`` (sklearn's default: only the classes in the labels or predictions), ``accuracy``,
    ``f1_<class>``."""
    names = task.labels.names
    if not len(rows):
        nan = {"f1_macro": math.nan, "f1_present": math.nan, "accuracy": math.nan}
        return {**nan, **{f"f1_{n}": math.nan for n in names}}
    y_true = rows["true"].to_numpy(int)
    y_pred = rows["pred"].to_numpy(int)
    per_class = scores.per_class_f1(y_true, y_pred, len(names))
    out = {
        "f1_macro": float(np.mean(per_class)),
        "f1_present": scores.f1_present(y_true, y_pred),
        "accuracy": scores.accuracy(y_true, y_pred),
    }
    out.update({f"f1_{n}": float(v) for n, v in zip(names, per_class)})
    return out


def label_f1_scores(mean_key: str) -> Callable:
    """Binary F1 per label at the task's threshold (``f1_<label>``) and their mean (``mean_key``)."""

    def score(task, rows: pd.DataFrame) -> dict:
        names = task.labels.names
        if len(rows):
            values = scores.label_f1(
                rows[[f"true_{n}" for n in names]].to_numpy(int), rows[[f"pred_{n}" for n in names]].to_numpy(int)
            )
        else:
            values = np.full(len(names), math.nan)
        return {mean_key: float(np.mean(values)), **{f"f1_{n}": float(s) for n, s in zip(names, values)}}

    return score


def ccc_scores(mean_key: str) -> Callable:
    """``ccc_<name>`` and ``pearson_<name>`` per output, and the mean CCC (``mean_key``)."""

    def score(task, rows: pd.DataFrame) -> dict:
        out: dict = {}
        for n in task.labels.names:
            out[f"ccc_{n}"] = scores.ccc(rows[f"true_{n}"], rows[f"pred_{n}"])
            out[f"pearson_{n}"] = scores.pearson(rows[f"true_{n}"], rows[f"pred_{n}"])
        out[mean_key] = sum(out[f"ccc_{n}"] for n in task.labels.names) / len(task.labels.names)
        return out

    return score


def pearson_scores(mean_key: str) -> Callable:
    """``pearson_<name>`` per output and their mean (``mean_key``; ABAW5 ERI)."""

    def score(task, rows: pd.DataFrame) -> dict:
        values = [scores.pearson(rows[f"true_{n}"], rows[f"pred_{n}"]) for n in task.labels.names]
        return {mean_key: float(np.mean(values)), **{f"pearson_{n}": s for n, s in zip(task.labels.names, values)}}

    return score


@dataclass(frozen=True)
class Grouping:
    """What rebalancing groups a task's units by, and how its label distribution is counted.

    Args:
        groups: ``(labels [N, C] float64, eligible [N]) -> int group per unit``.
        distribution: ``(names, labels of the counted units, histogram bins) -> counts``.
    """

    groups: Callable[[np.ndarray, np.ndarray], np.ndarray]
    distribution: Callable[[tuple, np.ndarray, int], dict]


def va_histogram(valence: np.ndarray, arousal: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts ``[bins, bins]`` (valence rows, arousal columns) over ``[-1, 1]^2`` and the edges."""
    edges = np.linspace(-1.0, 1.0, bins + 1)
    counts, _, _ = np.histogram2d(valence, arousal, bins=[edges, edges])
    return counts, edges


def _rarest_active(labels, eligible):
    active = labels > 0.5
    positives = active[eligible].sum(axis=0)
    # Rarest label first; labels never positive sort last and never win (no unit has them active).
    rank = np.argsort(positives, kind="stable")
    by_rank = active[:, rank]
    return np.where(by_rank.any(axis=1), rank[by_rank.argmax(axis=1)], labels.shape[1])


def _quadrant(labels, eligible=None):
    return (labels[:, 0] >= 0).astype(np.int64) * 2 + (labels[:, 1] >= 0)


def _count_classes(names, labels, bins):
    ids = labels[:, 0].astype(np.int64)
    return {"classes": {n: int(np.sum(ids == k)) for k, n in enumerate(names)}}


def _count_positives(names, labels, bins):
    return {
        "positives": {n: int(np.sum(labels[:, k] > 0.5)) for k, n in enumerate(names)},
        "no_active": int(np.sum(~(labels > 0.5).any(axis=1))),
    }


def _count_quadrants(names, labels, bins):
    counts, edges = va_histogram(labels[:, 0], labels[:, 1], bins)
    quadrant = _quadrant(labels)
    return {
        "quadrants": {q: int(np.sum(quadrant == k)) for k, q in enumerate(("v-a-", "v-a+", "v+a-", "v+a+"))},
        "histogram": {"edges": edges.round(6).tolist(), "counts": counts.astype(int).tolist()},
    }


def _count_dominant(names, labels, bins):
    dominant = labels.argmax(axis=1) if labels.size else np.zeros(0, int)
    return {
        "dominant": {n: int(np.sum(dominant == k)) for k, n in enumerate(names)},
        "mean": {n: float(labels[:, k].mean()) if labels.size else None for k, n in enumerate(names)},
    }


BY_CLASS = Grouping(lambda labels, eligible: labels[:, 0].astype(np.int64), _count_classes)
BY_RAREST_LABEL = Grouping(_rarest_active, _count_positives)
BY_QUADRANT = Grouping(_quadrant, _count_quadrants)
BY_DOMINANT = Grouping(lambda labels, eligible: labels.argmax(axis=1), _count_dominant)
