"""Confusion matrices of a classification run, as CSV (with the class names) and PNG.

Rows that count are those the metrics score (``valid == 1`` and ``face == 1``, see
:meth:`core.tasks.TaskSpec.scored_rows`), so a matrix sums to ``metrics.json``'s ``n_frames``.
Tasks whose entry lists the ``confusion`` plot get one, by label kind:

- class tasks (``expr``, ``clip``): one ``K x K`` matrix, rows the true class, columns the predicted class;
  ``counts`` and ``normalised`` (each row divided by its total, so a row is the recall
  distribution of that true class; a class never true has a row of zeros).
- multilabel tasks (``au``): one ``2 x 2`` matrix per AU (``TN, FP / FN, TP``), in one CSV row per AU and one PNG of
  small multiples.

Example::

    df = pd.read_csv("runs/<run_id>/predictions_validation.csv")
    paths = write_confusion(df, "expr", Path("reports/runs/<run_id>"))
    sorted(p.name for p in paths)
    # ['confusion_counts.csv', 'confusion_counts.png', 'confusion_normalised.csv', 'confusion_normalised.png']
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix, multilabel_confusion_matrix

from core.tasks import TASKS, TaskSpec

DPI = 110


def confusion_tables(y_true, y_pred, class_names) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counts and row-normalised matrices over every class id ``0..K-1``.

    Args:
        y_true, y_pred: int class ids. class_names: the K names, in id order.

    Returns:
        ``(counts, normalised)``: DataFrames indexed by the true class name (index name ``true``)
        with one column per predicted class name.
    """
    labels = list(range(len(class_names)))
    counts = confusion_matrix(y_true, y_pred, labels=labels)
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    index = pd.Index(list(class_names), name="true")
    return (
        pd.DataFrame(counts, index=index, columns=list(class_names)),
        pd.DataFrame(normalised, index=index, columns=list(class_names)),
    )


def au_confusion_table(y_true, y_pred, au_names) -> pd.DataFrame:
    """One row per AU: ``TN, FP, FN, TP`` (sklearn's ``multilabel_confusion_matrix``) and support."""
    mcm = multilabel_confusion_matrix(np.asarray(y_true, int), np.asarray(y_pred, int))
    flat = mcm.reshape(len(au_names), 4)
    table = pd.DataFrame(flat, columns=["TN", "FP", "FN", "TP"], index=pd.Index(list(au_names), name="AU"))
    table["positives"] = table["FN"] + table["TP"]
    return table


def _matrix_figure(matrix: np.ndarray, names, title: str, values_format: str) -> Figure:
    k = len(names)
    side = max(4.2, 0.62 * k + 2.4)
    fig = Figure(figsize=(side + 0.8, side), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    disp = ConfusionMatrixDisplay(confusion_matrix=matrix, display_labels=list(names))
    disp.plot(
        ax=ax,
        cmap="Blues",
        colorbar=True,
        values_format=values_format,
        xticks_rotation=45,
        im_kw={"vmin": 0.0, "vmax": 1.0} if values_format != "d" else None,
    )
    # sklearn picks the text colour from the data range, which turns labels white on pale cells
    # when no cell is dark; decide from the colour scale instead.
    top = 1.0 if values_format != "d" else max(float(matrix.max()), 1.0)
    for (i, j), text in np.ndenumerate(disp.text_):
        text.set_fontsize(8 if k > 6 else 10)
        text.set_color("white" if matrix[i, j] / top > 0.55 else "black")
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    return fig


def _au_figure(table: pd.DataFrame, title: str) -> Figure:
    n = len(table)
    cols = min(6, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.0 * cols + 0.4, 2.1 * rows + 0.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (au, r) in zip(axes.ravel(), table.iterrows()):
        counts = np.array([[r.TN, r.FP], [r.FN, r.TP]], float)
        totals = counts.sum(axis=1, keepdims=True)
        rates = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for (i, j), c in np.ndenumerate(counts):
            ax.text(
                j,
                i,
                f"{int(c)}\n{rates[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7.5,
                color="white" if rates[i, j] > 0.6 else "black",
            )
        ax.set_title(au, fontsize=9)
        ax.set_xticks([0, 1], ["0", "1"], fontsize=7)
        ax.set_yticks([0, 1], ["0", "1"], fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.set_axis_off()
    fig.supxlabel("predicted (count, row share)", fontsize=9)
    fig.supylabel("true", fontsize=9)
    fig.suptitle(title, fontsize=11)
    return fig


def write_confusion(predictions: pd.DataFrame, task: str | TaskSpec, out_dir: str | Path) -> list[Path]:
    """Writes the confusion CSVs and PNGs of one predictions table into ``out_dir``.

    Args:
        predictions: a ``predictions_validation.csv`` table (docs/run_format.md).
        task: a task (or its name) whose entry lists the ``confusion`` plot.
        out_dir: created if missing.

    Returns:
        The files written: ``confusion_counts.{csv,png}`` and ``confusion_normalised.{csv,png}``
        (class tasks) or ``confusion_<task>.{csv,png}`` (multilabel tasks).
    """
    spec = TASKS[task] if isinstance(task, str) else task
    if "confusion" not in spec.plots:
        have = [n for n, t in TASKS.items() if "confusion" in t.plots]
        raise ValueError(f"no confusion matrix for task '{spec.name}'; tasks with one: {', '.join(have)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = spec.scored_rows(predictions)
    names = spec.labels.names
    if spec.labels.kind == "multilabel":
        table = au_confusion_table(
            rows[[f"true_{n}" for n in names]].to_numpy(int), rows[[f"pred_{n}" for n in names]].to_numpy(int), names
        )
        csv, png = out / f"confusion_{spec.name}.csv", out / f"confusion_{spec.name}.png"
        table.to_csv(csv)
        _au_figure(table, f"{spec.name.upper()} confusion, {len(rows)} {spec.unit} (rows: true 0/1)").savefig(png)
        return [csv, png]
    counts, normalised = confusion_tables(rows["true"].to_numpy(int), rows["pred"].to_numpy(int), names)
    written = []
    unit = spec.unit
    for kind, table, fmt in (("counts", counts, "d"), ("normalised", normalised, ".2f")):
        csv, png = out / f"confusion_{kind}.csv", out / f"confusion_{kind}.png"
        table.to_csv(csv, float_format="%.6f" if kind == "normalised" else None)
        title = f"{kind.replace('normalised', 'row-normalised')} ({len(rows)} {unit})"
        _matrix_figure(table.to_numpy(), names, title, fmt).savefig(png)
        written += [csv, png]
    return written
