"""Scores from a run's predictions table (``predictions_validation.csv``, see docs/run_format.md).

CCC is written here (it is not in sklearn); F1 and accuracy come from sklearn. Rows are scored
when ``valid == 1`` (the label is annotated) and ``face == 1`` (a face was found): frames without a
face count in neither the loss nor the metrics; ``n_no_face`` says how many valid rows that left out.

Example:

>>> df = pd.read_csv("runs/<run_id>/predictions_validation.csv")
>>> metrics_from_predictions(df, "va")["ccc_mean"]
0.41
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from data_manifests.schema import LABELS

# The metric each task's checkpoint and early stopping follow (higher is better for all).
MONITOR = {"va": "ccc_mean", "expr": "f1_macro", "clip": "f1_macro", "au": "au_f1_mean", "eri": "pearson_mean"}


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


def f1_macro(y_true, y_pred) -> float:
    """Macro F1 over the classes present in ``y_true`` or ``y_pred`` (sklearn's default set)."""
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def per_class_f1(y_true, y_pred, n_classes: int) -> np.ndarray:
    """F1 of every class id in ``range(n_classes)``; 0 for a class never true nor predicted."""
    return f1_score(y_true, y_pred, labels=list(range(n_classes)), average=None, zero_division=0)


def au_f1(y_true, y_pred) -> np.ndarray:
    """Binary F1 per AU column of two ``[N, K]`` 0/1 arrays (ABAW's AU score is their mean)."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    return np.array([f1_score(y_true[:, k], y_pred[:, k], zero_division=0) for k in range(y_true.shape[1])])


def prediction_columns(task: str) -> list[str]:
    """The task-specific columns of the predictions table, in the documented order."""
    names = LABELS[task].names
    if task == "va":
        return ["true_valence", "true_arousal", "pred_valence", "pred_arousal"]
    if task in ("expr", "clip"):
        return ["true", "pred"] + [f"prob_{n}" for n in names]
    if task == "au":
        return [f"true_{n}" for n in names] + [f"prob_{n}" for n in names] + [f"pred_{n}" for n in names]
    if task == "eri":
        return [f"true_{n}" for n in names] + [f"pred_{n}" for n in names]
    raise ValueError(f"no predictions layout for task '{task}'; tasks: {', '.join(LABELS)}")


PREFIX_COLUMNS = ["sample_id", "frame_index", "face", "valid"]


def scored_rows(df: pd.DataFrame, task: str) -> pd.DataFrame:
    """The rows that count: annotated and with a face. Raises when a documented column is missing."""
    missing = [c for c in PREFIX_COLUMNS + prediction_columns(task) if c not in df.columns]
    if missing:
        raise ValueError(f"predictions table for task '{task}' lacks columns {missing}; "
                         f"see docs/run_format.md")
    return df[(df["valid"].astype(int) == 1) & (df["face"].astype(int) == 1)]


def metrics_from_predictions(df: pd.DataFrame, task: str, model: str = "") -> dict:
    """Flat metrics of one predictions table (the keys of ``metrics.json``).

    Args:
        df: the predictions table (columns of docs/run_format.md).
        task: ``va``, ``expr``, ``au``, ``eri`` or ``clip``.
        model: recorded under ``model``.

    Returns:
        va: ``ccc_valence``, ``ccc_arousal``, ``ccc_mean``, ``pearson_valence``, ``pearson_arousal``;
        expr/clip: ``f1_macro``, ``accuracy``, ``f1_<class>``; au: ``au_f1_mean``, ``f1_<AU>``;
        eri: ``pearson_mean``, ``pearson_<name>``; always ``n_frames``, ``n_no_face``, ``task``,
        ``model``. Undefined scores (no rows, constant series) are NaN.
    """
    rows = scored_rows(df, task)
    valid_all = df[df["valid"].astype(int) == 1]
    out: dict = {"task": task, "model": model, "n_frames": int(len(rows)),
                 "n_no_face": int(len(valid_all) - len(rows))}
    names = LABELS[task].names
    if task == "va":
        for dim in ("valence", "arousal"):
            out[f"ccc_{dim}"] = ccc(rows[f"true_{dim}"], rows[f"pred_{dim}"])
            out[f"pearson_{dim}"] = pearson(rows[f"true_{dim}"], rows[f"pred_{dim}"])
        out["ccc_mean"] = (out["ccc_valence"] + out["ccc_arousal"]) / 2
    elif task in ("expr", "clip"):
        y_true = rows["true"].to_numpy(int)
        y_pred = rows["pred"].to_numpy(int)
        if len(rows):
            out["f1_macro"] = f1_macro(y_true, y_pred)
            out["accuracy"] = float(accuracy_score(y_true, y_pred))
            for name, value in zip(names, per_class_f1(y_true, y_pred, len(names))):
                out[f"f1_{name}"] = float(value)
        else:
            out.update({"f1_macro": math.nan, "accuracy": math.nan, **{f"f1_{n}": math.nan for n in names}})
    elif task == "au":
        if len(rows):
            scores = au_f1(rows[[f"true_{n}" for n in names]].to_numpy(int),
                           rows[[f"pred_{n}" for n in names]].to_numpy(int))
        else:
            scores = np.full(len(names), math.nan)
        out["au_f1_mean"] = float(np.mean(scores))
        out.update({f"f1_{n}": float(s) for n, s in zip(names, scores)})
    elif task == "eri":
        scores = [pearson(rows[f"true_{n}"], rows[f"pred_{n}"]) for n in names]
        out["pearson_mean"] = float(np.mean(scores))
        out.update({f"pearson_{n}": s for n, s in zip(names, scores)})
    else:
        raise ValueError(f"no metrics for task '{task}'; tasks: {', '.join(LABELS)}")
    return out


def json_safe(metrics: dict) -> dict:
    """NaN -> None, so ``metrics.json`` is strict JSON (``null`` for an undefined score)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
