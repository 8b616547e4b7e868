"""``make analyze``'s pictures of one video: ``overlay.mp4`` (the video with the face box and the
run's predictions drawn on every frame, OpenCV) and ``timeline.png`` (the predictions over time,
face-less stretches shaded, matplotlib).

What is drawn follows the task entry: class tasks get the predicted class and one probability
bar per class, multilabel tasks a bar per label with the threshold marked, ``circumplex`` tasks a
valence-arousal point on the circumplex, other regression tasks a bar per output.

Example::

    info = write_overlay("clip.mp4", "analysis/clip/overlay.mp4", table, TASKS["expr"], fps=25.0)
    info["frames"], info["codec"]
    # (472, 'mp4v')
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from core.tasks import TaskSpec
from evaluate.plots import true_runs

# H.264 first (browsers play it) where this OpenCV build can write it; MPEG-4 Part 2 otherwise,
# which cv2.VideoCapture and ffmpeg-based players read.
CODECS = ("avc1", "mp4v")
BOX, TEXT, PANEL, BAR, MARK = (80, 200, 80), (255, 255, 255), (40, 40, 40), (60, 160, 255), (0, 90, 255)


def prediction_columns(task: TaskSpec) -> list[str]:
    """The per-frame values the pictures show, in the labels' order (``frames.csv`` column names)."""
    names = task.labels.names
    if task.labels.kind in ("class", "multilabel"):
        return [f"prob_{n}" for n in names]
    return list(names)


def open_writer(path: Path, fps: float, size: tuple[int, int]) -> tuple[cv2.VideoWriter, str]:
    """A writer with the first codec of :data:`CODECS` this OpenCV build opens; ``size`` is (w, h)."""
    for codec in CODECS:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
        if writer.isOpened():
            return writer, codec
        writer.release()
    raise ValueError(f"{path}: OpenCV can write none of the codecs {', '.join(CODECS)}; reinstall opencv-python")


def _bars(frame, values: np.ndarray, names, origin: tuple[int, int], threshold: float | None) -> None:
    x0, y0 = origin
    scale = max(frame.shape[0] / 720.0, 0.5)
    row, width = int(18 * scale), int(110 * scale)
    label_w = int(max(len(n) for n in names) * 8 * scale) + 6
    cv2.rectangle(frame, (x0, y0), (x0 + label_w + width + 8, y0 + row * len(names) + 6), PANEL, -1)
    for k, (name, value) in enumerate(zip(names, values)):
        y = y0 + 4 + k * row
        cv2.putText(frame, name, (x0 + 4, y + row - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * scale, TEXT, 1, cv2.LINE_AA)
        length = int(width * float(np.clip(value, 0.0, 1.0)))
        cv2.rectangle(frame, (x0 + label_w, y + 2), (x0 + label_w + length, y + row - 3), BAR, -1)
        if threshold is not None:
            tx = x0 + label_w + int(width * threshold)
            cv2.line(frame, (tx, y + 1), (tx, y + row - 2), MARK, 1)


def _circumplex(frame, valence: float, arousal: float, origin: tuple[int, int]) -> None:
    side = int(max(frame.shape[0] / 720.0, 0.5) * 120)
    x0, y0 = origin
    c = (x0 + side // 2, y0 + side // 2)
    cv2.rectangle(frame, (x0, y0), (x0 + side, y0 + side), PANEL, -1)
    cv2.circle(frame, c, side // 2 - 4, TEXT, 1, cv2.LINE_AA)
    cv2.line(frame, (x0 + 4, c[1]), (x0 + side - 4, c[1]), TEXT, 1)
    cv2.line(frame, (c[0], y0 + 4), (c[0], y0 + side - 4), TEXT, 1)
    r = side // 2 - 4
    point = (int(c[0] + np.clip(valence, -1, 1) * r), int(c[1] - np.clip(arousal, -1, 1) * r))
    cv2.circle(frame, point, 5, MARK, -1, cv2.LINE_AA)


def draw_frame(frame: np.ndarray, row, task: TaskSpec) -> None:
    """Draws one ``frames.csv`` row on a BGR frame, in place: box, label, the prediction panel."""
    names = task.labels.names
    values = np.array([row[c] for c in prediction_columns(task)], np.float64)
    if row["face"]:
        x0, y0, x1, y1 = (int(round(row[c])) for c in ("x0", "y0", "x1", "y1"))
        cv2.rectangle(frame, (x0, y0), (x1, y1), BOX, 2)
        if task.labels.kind == "class":
            label = f"{row['class_name']} {values.max():.2f}"
            cv2.putText(frame, label, (x0, max(y0 - 8, 14)), cv2.FONT_HERSHEY_SIMPLEX, 0.6, BOX, 2, cv2.LINE_AA)
    if task.circumplex:
        _circumplex(frame, values[0], values[1], (8, 8))
    else:
        threshold = task.threshold if task.labels.kind == "multilabel" else None
        lo, hi = task.value_range or (0.0, 1.0)
        shown = (values - lo) / (hi - lo) if task.labels.kind == "regression" else values
        _bars(frame, shown, names, (8, 8), threshold)


def write_overlay(source: str | Path, path: str | Path, table: pd.DataFrame, task: TaskSpec, fps: float) -> dict:
    """Re-decodes ``source`` frame by frame, draws each frame's row of ``table`` and writes ``path``.

    Returns:
        ``frames`` written, ``width``, ``height``, ``fps`` and the ``codec`` used.
    """
    path = Path(path)
    rows = table.set_index("frame", drop=False)
    capture = cv2.VideoCapture(str(source), cv2.CAP_FFMPEG)
    writer, codec, n, size = None, "", 0, (0, 0)
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            n += 1
            if writer is None:
                size = (frame.shape[1], frame.shape[0])
                writer, codec = open_writer(path, fps, size)
            if n in rows.index:
                draw_frame(frame, rows.loc[n], task)
            writer.write(frame)
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    return {"frames": n, "width": size[0], "height": size[1], "fps": fps, "codec": codec}


def plot_timeline(table: pd.DataFrame, task: TaskSpec, title: str, path: str | Path) -> Path:
    """The per-frame predictions of ``table`` over time (seconds); frames without a face shaded grey."""
    time = table["timestamp"].to_numpy(np.float64)
    no_face = table["face"].to_numpy(int) == 0
    fig = Figure(figsize=(11, 3.6), dpi=100, layout="constrained")
    ax = fig.subplots()
    step = float(np.median(np.diff(time))) if len(time) > 1 else 1.0
    for lo, hi in true_runs(no_face):
        ax.axvspan(time[lo] - step / 2, time[hi - 1] + step / 2, color="#cccccc", alpha=0.6, lw=0)
    for name, column in zip(task.labels.names, prediction_columns(task)):
        ax.plot(time, table[column].to_numpy(np.float64), lw=1.0, label=name)
    if task.labels.kind == "multilabel":
        ax.axhline(task.threshold, color="#888888", lw=0.6, ls="--")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability" if task.labels.kind != "regression" else "value")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, ncols=min(len(task.labels.names), 7), loc="upper right")
    ax.set_title(f"{title} (grey: no face)", fontsize=10)
    path = Path(path)
    fig.savefig(path)
    return path
