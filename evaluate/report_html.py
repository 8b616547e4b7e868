"""Rendering of the report (:mod:`evaluate.report` gathers the data): one self-contained HTML page
(inline CSS, no script, relative PNG paths) and a Markdown summary with the same tables.

Example::

    text = html_page(Context(runs=runs, table=table, best=best, ...))
"""

from __future__ import annotations

import html
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from core.tasks import TASKS
from evaluate import report_modalities as modalities

CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; color: #1d2329;
       margin: 0 auto; padding: 0 24px 48px; max-width: 1500px; background: #fff; }
h1 { font-size: 24px; margin: 20px 0 4px; } h2 { font-size: 19px; margin: 32px 0 8px; border-bottom: 1px solid #d8dee4;
     padding-bottom: 4px; } h3 { font-size: 15px; margin: 18px 0 6px; }
p.meta, .note { color: #57606a; font-size: 13px; margin: 4px 0; }
nav { font-size: 13px; margin: 8px 0 0; } nav a { margin-right: 14px; }
a { color: #0a58ca; text-decoration: none; } a:hover { text-decoration: underline; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12.5px; margin: 6px 0 10px; }
th, td { border: 1px solid #d8dee4; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f3f5f7; font-weight: 600; position: sticky; top: 0; }
td.txt, th.txt { text-align: left; }
td.runid { text-align: left; white-space: normal; word-break: break-all; min-width: 190px; max-width: 260px;
           font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 11.5px; }
td.best { background: #d3f0dc; font-weight: 700; }
tr.bestrun td.runid::before { content: "\\2605 "; color: #c27c0e; }
tr.baseline td { color: #444; background: #fafafa; }
td.pos { color: #176f2c; font-weight: 600; } td.neg { color: #b3261e; font-weight: 600; }
section.run { border-top: 3px solid #e7ebef; margin-top: 30px; }
section.run h2 { border: 0; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 15px;
                 word-break: break-all; }
ul.problems { color: #8a4b00; font-size: 13px; margin: 4px 0; }
.figs { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 14px 20px;
        align-items: start; }
.figs figure.wide { grid-column: 1 / -1; }
figure { margin: 0; } figure img { max-width: 100%; height: auto; border: 1px solid #e5e8eb; }
figcaption { font-size: 12px; color: #57606a; }
.pair { display: flex; flex-wrap: wrap; gap: 14px; } .pair figure { flex: 1 1 420px; max-width: 620px; }
"""

RUN_COLUMNS = ("dataset", "backbone", "model", "task", "rebalance", "seed", "epochs")


@dataclass
class Context:
    """Everything the two renderers need (built by :func:`evaluate.report.build_report`)."""

    runs: list
    table: pd.DataFrame
    best: pd.DataFrame
    best_runs: set
    comparisons: list
    modalities: list
    caches: pd.DataFrame
    figures: dict
    runs_dir: str
    generated: str


def fmt(value, digits: int = 3) -> str:
    """Numbers to short text: NaN/None -> ``–``, floats with ``digits`` decimals, ints as is."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _anchor(run_id: str) -> str:
    return "run-" + quote(run_id, safe="")


def _src(path: Path) -> str:
    return "/".join(quote(part) for part in Path(path).parts)


def _metric_cols(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in ("run", *RUN_COLUMNS, "n_frames")]


def task_groups(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame, list[str]]]:
    """``(task, rows, metric columns)`` per task in table order; a task's metrics are the columns
    its runs fill."""
    out = []
    for task in dict.fromkeys(table["task"]):
        rows = table[table["task"] == task]
        out.append((task, rows, [c for c in _metric_cols(table) if rows[c].notna().any()]))
    return out


def _runs_html(ctx: Context) -> str:
    parts = []
    for task, rows, metrics in task_groups(ctx.table):
        head = (
            "".join(f'<th class="txt">{_e(c)}</th>' for c in ("run", *RUN_COLUMNS))
            + "<th>scored</th>"
            + "".join(f"<th>{_e(c)}</th>" for c in metrics)
        )
        body = []
        for i, row in rows.iterrows():
            cls = ' class="bestrun"' if row["run"] in ctx.best_runs else ""
            cells = [f'<td class="runid"><a href="#{_anchor(row["run"])}">{_e(row["run"])}</a></td>']
            cells += [f'<td class="txt">{_e(row[c])}</td>' for c in RUN_COLUMNS]
            cells.append(f"<td>{fmt(row['n_frames'])}</td>")
            cells += [f"<td{' class=best' if ctx.best.at[i, c] else ''}>{fmt(row[c])}</td>" for c in metrics]
            body.append(f"<tr{cls}>{''.join(cells)}</tr>")
        parts.append(
            f'<h3>task {_e(task)}</h3><div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>"
        )
    return (
        "".join(parts)
        + (
            '<p class="note">Green: the best value of that metric within its dataset and task. &#9733;: the best run '
            f"of its dataset and task by the task's validation metric ({_monitors()}). Epochs: run/maximum, best "
            "epoch (1-based). Scored: validation frames (clips for clip tasks) that count: annotated, with a "
            "face.</p>"
        )
        if parts
        else ""
    )


def _monitors() -> str:
    """``va: ccc_mean, expr/clip: f1_macro, ...`` from the task entries."""
    by_metric: dict[str, list[str]] = {}
    for name, task in TASKS.items():
        by_metric.setdefault(task.monitor, []).append(name)
    return ", ".join(f"{'/'.join(names)}: {metric}" for metric, names in by_metric.items())


def formulas(ctx: Context) -> list[tuple[str, str]]:
    """``(task, how its scores are computed)`` for each task of the runs, from the task entries."""
    names = sorted({r.task for r in ctx.runs if r.spec is not None}, key=list(TASKS).index)
    return [(n, TASKS[n].formula) for n in names if TASKS[n].formula]


def _formulas_html(ctx: Context) -> str:
    items = "".join(f"<li><b>{_e(task)}</b>: {_e(text)}</li>" for task, text in formulas(ctx))
    return f'<h3>How the scores are computed</h3><ul class="note">{items}</ul>' if items else ""


def _comparison_html(ctx: Context) -> str:
    if not ctx.comparisons:
        return '<p class="note">No scored run.</p>'
    parts = []
    for key, t in ctx.comparisons:
        title = f"{key['dataset']} · {key['backbone']} · {key['task']}"
        rows = []
        for _, r in t.iterrows():
            delta = r["delta"]
            dcls = "" if math.isnan(delta) else (' class="pos"' if delta > 0 else ' class="neg"' if delta < 0 else "")
            sign = "+" if not math.isnan(delta) and delta > 0 else ""
            rows.append(
                f'<tr class="{r["kind"]}"><td class="txt">{_e(r["model"])}</td>'
                f'<td class="txt">{_e(r["rebalance"])}</td><td class="txt">{r["kind"]}</td>'
                f'<td>{r["runs"]}</td><td class="txt">{_e(r["seeds"])}</td><td>{fmt(r["mean"])}</td>'
                f"<td>{fmt(r['std'])}</td><td>{fmt(r['best'])}</td><td{dcls}>{sign}{fmt(delta)}</td></tr>"
            )
        base = (
            f"best baseline: {_e(key['baseline'])}, {fmt(key['baseline_mean'])}"
            if key["baseline"]
            else "no baseline run: train MODEL=frame or MODEL=avgpool for a reference"
        )
        parts.append(
            f'<h3>{_e(title)} <span class="note">({_e(key["metric"])}; {base})</span></h3>'
            '<table><thead><tr><th class="txt">model</th><th class="txt">rebalance</th>'
            '<th class="txt">kind</th><th>runs</th>'
            '<th class="txt">seeds</th><th>mean</th><th>std</th><th>best</th>'
            "<th>&Delta; vs best baseline</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    return "".join(parts) + (
        '<p class="note">Mean and std over the runs of each model (std 0 for one run); '
        "&Delta; = the mean minus the best baseline's mean (frame or avgpool, any rebalance).</p>"
    )


CACHE_HEADERS = {
    "cache": "cache",
    "runs": "runs",
    "backbone": "backbone",
    "backend": "backend",
    "mode": "input",
    "videos": "videos",
    "frames": "frames",
    "face_hit_rate": "face-hit rate",
    "last_run": "last extraction run",
    "note": "note",
}
CACHE_TEXT = ("cache", "backbone", "backend", "mode", "last_run", "note")


def _rate(value) -> str:
    return f"{value:.1%}" if isinstance(value, float) and not math.isnan(value) else fmt(value)


def cache_cells(r: pd.Series) -> dict[str, str]:
    """One cache row as display text (the last extraction run condensed into one cell)."""
    cells = {c: _rate(r[c]) if c == "face_hit_rate" else fmt(r[c], 1) for c in CACHE_HEADERS if c in r}
    if pd.notna(r.get("run_frames")):
        cells["last_run"] = (
            f"{fmt(r['run_frames'])} frames, {_rate(r['run_face_hit_rate'])} "
            f"{'with audio' if r.get('mode') == 'audio' else 'with a face'}, "
            f"{fmt(r['done'])} videos done, {fmt(r['failed'])} failed, {fmt(r['seconds'], 1)} s, "
            f"{fmt(r['frames_per_s'], 1)} frames/s"
        )
    else:
        cells["last_run"] = "–"
    cells["note"] = str(r["note"]) if r["note"] else ""
    return {c: cells[c] for c in CACHE_HEADERS}


def _caches_html(ctx: Context) -> str:
    if ctx.caches.empty:
        return '<p class="note">No run records the cache it read.</p>'
    head = "".join(f'<th class="{"txt" if c in CACHE_TEXT else ""}">{_e(h)}</th>' for c, h in CACHE_HEADERS.items())
    rows = []
    for _, r in ctx.caches.iterrows():
        cells = cache_cells(r)
        rows.append(
            "<tr>"
            + "".join(f'<td class="{"txt" if c in CACHE_TEXT else ""}">{_e(cells[c])}</td>' for c in CACHE_HEADERS)
            + "</tr>"
        )
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
        '<p class="note">videos, frames, face-hit rate: everything stored in the cache file. Last extraction run: '
        "the summary of the latest <code>make extract</code> on it (&lt;BACKBONE&gt;.extract.json), which counts "
        "only the videos that run extracted.</p>"
    )


CAPTIONS = {
    "history.png": "Training curves: loss and the validation metric per epoch (circle: the saved model).",
    "label_distribution.png": "Training labels before and after rebalancing.",
    "va_time.png": "Valence and arousal over time on validation videos.",
    "confusion_counts.png": "Confusion matrix, counts (rows: true class).",
    "confusion_normalised.png": "Confusion matrix, each row divided by its total (recall on the diagonal).",
}
LABEL_CONFUSION = "Per-label 2x2 confusion: count and row share."


def _config_line(r) -> str:
    c = r.config
    keys = ("seq_len", "stride", "layers", "units", "dropout", "lr", "batch_size", "patience", "undersample_cap")
    parts = [f"{k}={c[k]}" for k in keys if k in c]
    data = c.get("data") or {}
    if data:
        val, tr = data.get("validation", {}), data.get("train", {})
        parts.append(
            f"split: {data.get('split', '?')}; train {tr.get('samples', '?')} samples / "
            f"{tr.get('frames', '?')} frames; validation {val.get('samples', '?')} samples / "
            f"{val.get('frames', '?')} frames; {data.get('parameters', '?')} parameters"
        )
    if "keras_version" in c:
        parts.append(f"Keras {c['keras_version']} ({c.get('backend', '?')})")
    return "; ".join(parts)


def _run_html(ctx: Context, r) -> str:
    figs = ctx.figures.get(r.run_id, {})
    skip = {"task", "model", "n_frames", "n_no_face", "epochs_run", "best_epoch"}
    scores = {k: v for k, v in r.metrics.items() if k not in skip and isinstance(v, (int, float, type(None)))}
    score_table = ""
    if scores:
        score_table = (
            '<div class="scroll"><table><thead><tr>'
            + "".join(f"<th>{_e(k)}</th>" for k in scores)
            + "</tr></thead><tbody><tr>"
            + "".join(f"<td>{fmt(v)}</td>" for v in scores.values())
            + "</tr></tbody></table></div>"
        )
    counts = (
        (
            f"{fmt(r.metrics.get('n_frames'))} scored validation {r.spec.unit if r.spec else 'rows'}"
            f", {fmt(r.metrics.get('n_no_face'))} annotated without a face (not scored)"
        )
        if r.metrics
        else ""
    )
    problems = "".join(f"<li>{_e(p)}</li>" for p in r.problems)

    def figure(name: str, wide: bool = False) -> str:
        if name not in figs:
            return ""
        src = _src(figs[name])
        return (
            f'<figure{" class=wide" if wide else ""}><a href="{src}"><img src="{src}" '
            f'alt="{_e(name)} of {_e(r.run_id)}"></a>'
            f"<figcaption>{_e(CAPTIONS.get(name, LABEL_CONFUSION))}</figcaption></figure>"
        )

    confusion = figure("confusion_counts.png") + figure("confusion_normalised.png")
    csvs = [n for n in sorted(figs) if n.endswith(".csv")]
    links = " ".join(f'<a href="{_src(figs[n])}">{_e(n)}</a>' for n in csvs)
    grid = (
        figure("history.png")
        + figure("label_distribution.png")
        + figure("va_time.png", wide=True)
        + figure(f"confusion_{r.task}.png", wide=True)
    )
    star = " &#9733;" if r.run_id in ctx.best_runs else ""
    meta = [(c, r.backbone if c == "backbone" else r.get(c)) for c in RUN_COLUMNS[:-1]]
    return (
        f'<section class="run" id="{_anchor(r.run_id)}"><h2>{_e(r.run_id)}{star}</h2>'
        f'<p class="meta">{" · ".join(_e(f"{k}: {v}") for k, v in meta)} · epochs {_e(r.epochs())}</p>'
        f'<p class="meta">{_e(_config_line(r))}</p>'
        f'<p class="meta">{_e(counts)}</p>'
        + (f'<ul class="problems">{problems}</ul>' if problems else "")
        + score_table
        + (f'<div class="figs">{grid}</div>' if grid else "")
        + (f'<div class="pair">{confusion}</div>' if confusion else "")
        + (f'<p class="note">Tables: {links}</p>' if links else "")
        + "</section>"
    )


def html_page(ctx: Context) -> str:
    """The self-contained ``index.html``."""
    nav = (
        '<nav><a href="#runs">Runs</a><a href="#comparison">Temporal models vs baselines</a>'
        '<a href="#modalities">Visual, audio, audio-visual</a>'
        '<a href="#caches">Feature caches</a><a href="#per-run">Per run</a></nav>'
    )
    per_run = "".join(_run_html(ctx, r) for r in ctx.runs)
    empty = '<p class="note">No run folder found.</p>' if not ctx.runs else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Runs report</title><style>{CSS}</style></head>
<body><header><h1>Runs report</h1>
<p class="meta">{len(ctx.runs)} runs from <code>{_e(ctx.runs_dir)}</code>, generated {_e(ctx.generated)}.
Scores are computed on the validation split from each run's saved predictions.</p>{nav}</header>
<section id="runs"><h2>Runs</h2>{empty}{_runs_html(ctx) if ctx.runs else ""}
{_formulas_html(ctx)}</section>
<section id="comparison"><h2>Temporal models vs baselines</h2>{_comparison_html(ctx)}</section>
<section id="modalities"><h2>Visual, audio, audio-visual</h2>{modalities.html(ctx.modalities, _e)}</section>
<section id="caches"><h2>Feature caches</h2>{_caches_html(ctx)}</section>
<div id="per-run">{per_run}</div>
</body></html>
"""


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(ctx: Context) -> str:
    """``summary.md``: the runs table (best values in bold, best run starred), the comparison
    tables, the cache table and each run's problems and figure links."""
    out = [
        "# Runs report",
        "",
        f"{len(ctx.runs)} runs from `{ctx.runs_dir}`, generated {ctx.generated}. Figures: [index.html](index.html).",
        "",
        "## Runs",
        "",
    ]
    for task, table, metrics in task_groups(ctx.table):
        rows = []
        for i, row in table.iterrows():
            star = " ★" if row["run"] in ctx.best_runs else ""
            cells = [f"[{row['run']}](index.html#{_anchor(row['run'])}){star}"] + [str(row[c]) for c in RUN_COLUMNS]
            cells.append(fmt(row["n_frames"]))
            cells += [f"**{fmt(row[c])}**" if ctx.best.at[i, c] else fmt(row[c]) for c in metrics]
            rows.append(cells)
        out += [f"### task {task}", "", _md_table(["run", *RUN_COLUMNS, "scored", *metrics], rows), ""]
    out += (
        ["No run folder found."]
        if ctx.table.empty
        else [
            "Bold: the best value of that metric within its dataset and task; ★: the best run by the task's "
            "validation metric. Epochs: run/maximum, best epoch (1-based). Scored: validation frames (clips for "
            "clip tasks) that count: annotated, with a face."
        ]
    )
    if formulas(ctx):
        out += ["", "### How the scores are computed", ""] + [f"- **{t}**: {text}" for t, text in formulas(ctx)]
    out += ["", "## Temporal models vs baselines", ""]
    for key, t in ctx.comparisons:
        base = (
            f"best baseline: {key['baseline']}, {fmt(key['baseline_mean'])}" if key["baseline"] else "no baseline run"
        )
        out += [f"### {key['dataset']} · {key['backbone']} · {key['task']} ({key['metric']}; {base})", ""]
        out.append(
            _md_table(
                ["model", "rebalance", "kind", "runs", "seeds", "mean", "std", "best", "Δ vs best baseline"],
                [
                    [
                        r["model"],
                        r["rebalance"],
                        r["kind"],
                        str(r["runs"]),
                        r["seeds"],
                        fmt(r["mean"]),
                        fmt(r["std"]),
                        fmt(r["best"]),
                        ("+" if r["delta"] > 0 else "") + fmt(r["delta"]),
                    ]
                    for _, r in t.iterrows()
                ],
            )
        )
        out.append("")
    out += ["## Visual, audio, audio-visual", "", *modalities.markdown(ctx.modalities, _md_table)]
    out += ["## Feature caches", ""]
    if ctx.caches.empty:
        out.append("No run records the cache it read.")
    else:
        out.append(
            _md_table(list(CACHE_HEADERS.values()), [list(cache_cells(r).values()) for _, r in ctx.caches.iterrows()])
        )
    out += ["", "## Per run", ""]
    for r in ctx.runs:
        figs = ctx.figures.get(r.run_id, {})
        links = ", ".join(f"[{n}]({_src(p)})" for n, p in sorted(figs.items()))
        out.append(f"- `{r.run_id}`: {links or 'no figures'}" + "".join(f"\n  - ⚠ {p}" for p in r.problems))
    return "\n".join(out) + "\n"
