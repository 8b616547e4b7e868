"""The metric functions every task scores with: CCC and Pearson (written here: sklearn has no CCC),
F1 and accuracy (sklearn), each as the ABAW challenges define it.

>>> round(ccc([1, 2, 3], [1, 2, 3]), 6), round(pearson([1, 2, 3], [2, 4, 7]), 4)
(1.0, 0.9934)
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def ccc(x, y) -> float:
    """Concordance correlation coefficient (Lin 1989), population moments, as in ABAW.

    ``2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)``; NaN when undefined (both
    series constant and equal, or empty).

    Args:
        x, y: two 1-D sequences of the same length.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"ccc needs two 1-D series of the same length, got {x.shape} and {y.shape}")
    if x.size == 0:
        return math.nan
    mx, my = x.mean(), y.mean()
    cov = np.mean((x - mx) * (y - my))
    denom = x.var() + y.var() + (mx - my) ** 2
    return float(2 * cov / denom) if denom > 0 else math.nan


def pearson(x, y) -> float:
    """Pearson correlation; NaN when either series is constant or empty."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"pearson needs two 1-D series of the same length, got {x.shape} and {y.shape}")
    if x.size < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(np.sum(dx * dx) * np.sum(dy * dy)))
    return float(np.sum(dx * dy) / denom) if denom > 0 else math.nan


def f1_macro(y_true, y_pred, n_classes: int) -> float:
    """Macro F1 as the ABAW challenges score EXPR: the F1 of every class id in ``range(n_classes)``,
    summed and divided by ``n_classes``; a class neither true nor predicted counts 0.

    >>> round(f1_macro([0, 0, 1], [0, 1, 1], 4), 4)  # classes 2 and 3 never occur: (2/3 + 2/3 + 0 + 0) / 4
    0.3333
    """
    return float(np.mean(per_class_f1(y_true, y_pred, n_classes)))


def f1_present(y_true, y_pred) -> float:
    """sklearn's default macro F1: the mean over the classes present in ``y_true`` or ``y_pred`` only.

    >>> round(f1_present([0, 0, 1], [0, 1, 1]), 4)
    0.6667
    """
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def accuracy(y_true, y_pred) -> float:
    return float(accuracy_score(y_true, y_pred))


def per_class_f1(y_true, y_pred, n_classes: int) -> np.ndarray:
    """F1 of every class id in ``range(n_classes)``; 0 for a class never true nor predicted."""
    return f1_score(y_true, y_pred, labels=list(range(n_classes)), average=None, zero_division=0)


def label_f1(y_true, y_pred) -> np.ndarray:
    """Binary F1 per column of two ``[N, K]`` 0/1 arrays (ABAW's AU score is their mean)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    return np.array([f1_score(y_true[:, k], y_pred[:, k], zero_division=0) for k in range(y_true.shape[1])])


def json_safe(metrics: dict) -> dict:
    """NaN -> None, so ``metrics.json`` is strict JSON (``null`` for an undefined score).

    >>> json_safe({"a": float("nan"), "b": 1.0})
    {'a': None, 'b': 1.0}
    """
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
