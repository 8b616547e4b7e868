"""The report's figures of one run, each read from a file of the run folder (docs/run_format.md).

- :func:`plot_history`: ``history.csv`` -> training and validation loss, and the validation
  metric per epoch with the best epoch (the one ``model.keras`` holds) marked.
- :func:`plot_label_distribution`: ``label_distribution.json`` -> training label counts before and
  after rebalancing (classes, AU positives, VA quadrants and 2-D histograms, ERI dominant class).
- :func:`plot_va_time`: ``predictions_validation.csv`` of a ``va`` run -> predicted and true
  valence and arousal over time for a few validation videos, frames without a face shaded.

Figures are built with :class:`matplotlib.figure.Figure` (no pyplot state, no display needed) and
saved as PNG.

Example::

    plot_history(pd.read_csv(run / "history.csv"), "f1_macro", Path("reports/history.png"))
    plot_label_distribution(json.loads((run / "label_distribution.json").read_text()), Path("dist.png"))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

DPI = 100
BEFORE, AFTER = "#9aa5b1", "#1f6fb2"
TRUE, PRED = "#222222", "#d9480f"


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_history(history: pd.DataFrame, monitor: str, path: str | Path) -> Path:
    """Loss (train and validation) and ``val_<monitor>`` per epoch, best epoch marked.

    Args:
        history: the run's ``history.csv`` (Keras CSVLogger: ``epoch``, ``loss``, ``val_loss``,
            ``val_<monitor>``).
        monitor: the task's validation metric (the task entry's ``monitor``).
        path: the PNG to write.
    """
    epochs = history["epoch"].to_numpy() + 1 if "epoch" in history else np.arange(1, len(history) + 1)
    fig = Figure(figsize=(9.5, 3.4), dpi=DPI, layout="constrained")
    ax_loss, ax_metric = fig.subplots(1, 2)
    for col, label, color in (("loss", "training loss", BEFORE), ("val_loss", "validation loss", AFTER)):
        if col in history:
            ax_loss.plot(epochs, history[col], marker="o", ms=3, label=label, color=color)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss", fontsize=10)
    ax_loss.legend(fontsize=8)
    col = f"val_{monitor}"
    if col in history and np.isfinite(history[col].to_numpy(float)).any():
        values = history[col].to_numpy(float)
        best = int(np.nanargmax(values))
        ax_metric.plot(epochs, values, marker="o", ms=3, color=AFTER)
        ax_metric.scatter(
            [epochs[best]],
            [values[best]],
            s=90,
            facecolors="none",
            edgecolors=PRED,
            linewidths=2,
            label=f"best: epoch {epochs[best]}, {values[best]:.3f}",
            zorder=3,
        )
        ax_metric.legend(fontsize=8)
    else:
        ax_metric.text(
            0.5, 0.5, f"no finite {col} in history.csv", ha="center", va="center", transform=ax_metric.transAxes
        )
    ax_metric.set_xlabel("epoch")
    ax_metric.set_ylabel(monitor)
    ax_metric.set_title(f"validation {monitor}", fontsize=10)
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return _save(fig, path)


def _counts_key(side: dict) -> str | None:
    for key in ("classes", "positives", "quadrants", "dominant"):
        if key in side:
            return key
    return None


def _grouped_bars(ax, names, before, after, ylabel: str, log: bool) -> None:
    x = np.arange(len(names))
    w = 0.4
    for offset, values, label, color in ((-w / 2, before, "before", BEFORE), (w / 2, after, "after", AFTER)):
        bars = ax.bar(x + offset, values, w, label=label, color=color)
        if len(names) <= 8:  # more labels than that collide
            fmt = "{:.0f}" if ylabel == "count" else "{:.0%}"
            ax.bar_label(bars, labels=[fmt.format(v) if v else "" for v in values], fontsize=6.5, padding=1)
    slanted = len(names) > 8 or max(len(str(n)) for n in names) > 4
    ax.set_xticks(x, names, rotation=35 if slanted else 0, ha="right" if slanted else "center", fontsize=8)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)


def plot_label_distribution(dist: dict, path: str | Path) -> Path:
    """Training labels before and after rebalancing, from ``label_distribution.json``.

    Counts on the left (log scale when they span more than 50x), shares of the units on the
    right, so a rebalancing that keeps few units still shows how it reshaped the distribution.
    For ``va`` the two (valence, arousal) histograms are drawn below the quadrant bars.

    Args:
        dist: ``{"rebalance", "unit", "before": {...}, "after": {...}}`` as written by train.
        path: the PNG to write.
    """
    before, after = dist["before"], dist["after"]
    key = _counts_key(before)
    has_hist = "histogram" in before and "histogram" in after
    rows = 1 + int(has_hist)
    fig = Figure(figsize=(10, 3.6 * rows + (0.3 if has_hist else 0)), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, 2, squeeze=False)
    unit = dist.get("unit", "units")
    if dist.get("rebalance") == "none":
        title = f"training {unit}: {before.get('units', '?')} (rebalance 'none': after = before)"
    else:
        title = (
            f"training {unit}: {before.get('units', '?')} before, {after.get('units', '?')} after "
            f"rebalance '{dist.get('rebalance', '?')}'"
        )
    fig.suptitle(title, fontsize=11)
    if key is None:
        for ax in axes[0]:
            ax.set_axis_off()
        axes[0, 0].text(0.5, 0.5, "no counts in label_distribution.json", ha="center", va="center")
    else:
        names = list(before[key])
        b = np.array([before[key][n] for n in names], float)
        a = np.array([after[key].get(n, 0) for n in names], float)
        if key == "positives" and "no_active" in before:
            names.append("none")
            b = np.append(b, before["no_active"])
            a = np.append(a, after.get("no_active", 0))
        positive = np.concatenate([b, a])
        positive = positive[positive > 0]
        log = bool(positive.size) and positive.max() / positive.min() > 50
        what = {
            "classes": "class",
            "positives": "AU positives",
            "quadrants": "VA quadrant",
            "dominant": "dominant intensity",
        }[key]
        _grouped_bars(axes[0, 0], names, b, a, "count", log)
        axes[0, 0].set_title(f"{what} counts" + (" (log scale)" if log else ""), fontsize=10)
        share_b = b / b.sum() if b.sum() else b
        share_a = a / a.sum() if a.sum() else a
        _grouped_bars(axes[0, 1], names, share_b, share_a, "share", False)
        axes[0, 1].set_title(f"{what} share of the counts", fontsize=10)
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside upper right", ncols=2, fontsize=8)
    if has_hist:
        for ax, side, label in ((axes[1, 0], before, "before"), (axes[1, 1], after, "after")):
            counts = np.asarray(side["histogram"]["counts"], float)
            edges = np.asarray(side["histogram"]["edges"], float)
            shown = np.where(counts > 0, counts, np.nan)
            vmax = max(np.nanmax(shown), 1.0) if np.isfinite(shown).any() else 1.0
            mesh = ax.pcolormesh(edges, edges, shown.T, cmap="viridis", norm=LogNorm(vmin=1, vmax=max(vmax, 1.1)))
            fig.colorbar(mesh, ax=ax, label="frames (log)")
            ax.set_aspect("equal")
            ax.set_xlabel("valence")
            ax.set_ylabel("arousal")
            ax.axhline(0, color="white", lw=0.5)
            ax.axvline(0, color="white", lw=0.5)
            ax.set_title(f"(valence, arousal) histogram {label}", fontsize=10)
    return _save(fig, path)


def va_videos(predictions: pd.DataFrame, n: int = 3) -> list[str]:
    """The ``n`` validation videos with the most annotated frames (ties: sample id order)."""
    counts = predictions.assign(_v=predictions["valid"].astype(int)).groupby("sample_id", sort=True)["_v"].sum()
    return counts.sort_values(ascending=False, kind="stable").index[:n].tolist()


def true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` index ranges where ``mask`` is True."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2], edges[1::2]))


def plot_va_time(predictions: pd.DataFrame, path: str | Path, n_videos: int = 3) -> Path:
    """Predicted and true valence and arousal over frame number, one row per video.

    True values are drawn where annotated (``valid == 1``); frames without a face are shaded
    grey (their predictions are drawn but not scored).

    Args:
        predictions: a ``va`` run's ``predictions_validation.csv``.
        path: the PNG to write.
        n_videos: how many videos (those with the most annotated frames).
    """
    videos = va_videos(predictions, n_videos)
    fig = Figure(figsize=(11, 2.3 * max(len(videos), 1) + 0.5), dpi=DPI, layout="constrained")
    axes = fig.subplots(max(len(videos), 1), 2, squeeze=False, sharey=True)
    for row, vid in zip(axes, videos):
        df = predictions[predictions["sample_id"] == vid].sort_values("frame_index")
        frames = df["frame_index"].to_numpy()
        valid = df["valid"].to_numpy(int) == 1
        no_face = df["face"].to_numpy(int) == 0
        for ax, dim in zip(row, ("valence", "arousal")):
            for lo, hi in true_runs(no_face):
                ax.axvspan(frames[lo] - 0.5, frames[hi - 1] + 0.5, color="#cccccc", alpha=0.6, lw=0)
            ax.plot(frames, np.where(valid, df[f"true_{dim}"], np.nan), color=TRUE, lw=1.3, label="true")
            ax.plot(frames, df[f"pred_{dim}"], color=PRED, lw=1.1, label="predicted")
            ax.set_ylim(-1.05, 1.05)
            ax.axhline(0, color="#888888", lw=0.5)
            ax.grid(alpha=0.25)
            ax.set_title(f"{vid}: {dim}", fontsize=9)
            ax.tick_params(labelsize=8)
        row[0].set_ylabel("value", fontsize=8)
    axes[0, 1].legend(fontsize=8, loc="upper right", ncols=2)
    for ax in axes[-1]:
        ax.set_xlabel("frame", fontsize=8)
    fig.suptitle("validation videos: true (black) vs predicted (orange); grey = no face", fontsize=10)
    return _save(fig, path)
