"""The report's "Visual, audio, audio-visual" section: runs of one dataset and task side by side by the
streams they read (faces, audio, both with a fusion), like the baselines table.

One table per (dataset, task) whose runs read more than one kind of stream; one row per (streams,
model, fusion, rebalance) with its run count and the mean of each headline metric of the task
over those runs. Rendered to HTML and Markdown here, called by :mod:`evaluate.report_html`.
"""

from __future__ import annotations

import math

import pandas as pd

from core.tasks import TASKS

ORDER = {"visual": 0, "audio": 1, "audio-visual": 2}


def streams(config: dict) -> tuple[str, str]:
    """``(visual|audio|audio-visual, fusion or '')`` of a run's ``config.json`` (runs from before audio: visual)."""
    if not config.get("audio"):
        return "visual", ""
    if config.get("backbone") == "none":
        return "audio", ""
    return "audio-visual", str(config.get("fusion", ""))


def modality_tables(runs: list) -> list[tuple[dict, pd.DataFrame]]:
    """``(key, table)`` per (dataset, task) with more than one kind of stream (module docstring)."""
    rows = []
    for r in runs:
        if math.isnan(r.score) or r.spec is None:
            continue
        kind, fusion = streams(r.config)
        row = {"dataset": r.get("dataset"), "task": r.task, "streams": kind, "caches": r.backbone}
        row.update(model=str(r.get("model")), fusion=fusion, rebalance=str(r.get("rebalance")))
        row.update({m: r.metrics.get(m, math.nan) for m in r.spec.headline})
        rows.append(row)
    out = []
    if not rows:
        return out
    frame = pd.DataFrame(rows)
    for (dataset, task), group in frame.groupby(["dataset", "task"], sort=False):
        if group["streams"].nunique() < 2:
            continue
        metrics = list(TASKS[task].headline)
        by = group.groupby(["streams", "caches", "model", "fusion", "rebalance"], sort=False)
        table = by[metrics].mean().reset_index()
        table.insert(5, "runs", by.size().to_numpy())
        table = table.sort_values(["streams", "model"], key=lambda c: c.map(ORDER) if c.name == "streams" else c)
        out.append(({"dataset": dataset, "task": task, "metric": TASKS[task].monitor, "metrics": metrics}, table))
    return out


def _fmt(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


COLUMNS = ("streams", "caches", "model", "fusion", "rebalance", "runs")
NOTE = (
    "The mean over the runs of each row. Visual and audio-visual runs are scored on the annotated frames "
    "with a face, audio-only runs on the annotated frames with audio."
)


def html(tables: list, escape) -> str:
    """The section's HTML (``escape``: the page's HTML escaping)."""
    if not tables:
        return (
            '<p class="note">No dataset and task has runs of more than one stream; train with '
            "<code>AUDIO=logmel</code> (audio-visual) or <code>BACKBONE=none AUDIO=logmel</code> (audio alone).</p>"
        )
    parts = []
    for key, t in tables:
        head = "".join(f'<th class="txt">{c}</th>' for c in COLUMNS) + "".join(f"<th>{m}</th>" for m in key["metrics"])
        body = "".join(
            "<tr>"
            + "".join(f'<td class="txt">{escape(r[c])}</td>' for c in COLUMNS)
            + "".join(f"<td>{_fmt(r[m])}</td>" for m in key["metrics"])
            + "</tr>"
            for _, r in t.iterrows()
        )
        title = f"{key['dataset']} · {key['task']}"
        parts.append(f"<h3>{escape(title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return "".join(parts) + f'<p class="note">{NOTE}</p>'


def markdown(tables: list, table_md) -> list[str]:
    """The section's Markdown lines (``table_md(header, rows)``: the page's table writer)."""
    out = []
    for key, t in tables:
        rows = [[str(r[c]) for c in COLUMNS] + [_fmt(r[m]) for m in key["metrics"]] for _, r in t.iterrows()]
        out += [f"### {key['dataset']} · {key['task']}", "", table_md([*COLUMNS, *key["metrics"]], rows), ""]
    return out + [NOTE, ""] if out else ["No dataset and task has runs of more than one stream.", ""]
