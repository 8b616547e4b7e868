"""``make report``: every run folder of RUNS_DIR -> ``REPORT_DIR/index.html`` and ``summary.md``.

The page opens from disk (no server, no network, no script; CSS inline); its figures are PNG files
beside it, in ``REPORT_DIR/runs/<run_id>/``, referenced by relative paths. Everything comes from
the files of docs/run_format.md: metrics from ``metrics.json`` (recomputed from
``predictions_validation.csv`` with the task entry when it is missing), never from a model. Run
folders are read through :mod:`core.run_folder`; what a task shows (headline metrics, monitor,
figures) comes from its entry in :mod:`core.tasks`, whether a model is a baseline from its entry in
``train.models.MODELS``.

Contents:

- the table of runs (dataset, backbone, model, task, rebalance, seed, epochs, every headline
  metric), shown per task so each part has only its task's metric columns; the best value of each
  metric within a (dataset, task) is highlighted and the best run by the task's validation metric
  (the task entry's ``monitor``) is starred;
- temporal models beside the ``frame`` / ``avgpool`` baselines: per (dataset, backbone, task),
  each (model, rebalance) pair's mean and spread over its runs and the difference to the best
  baseline;
- visual, audio and audio-visual runs of one dataset and task side by side
  (:mod:`evaluate.report_modalities`);
- the extraction summary of each feature cache the runs read (``<BACKBONE>.extract.json``; audio
  caches too, their face-hit rate being the share of frames with audio);
- per run: training curves, label distribution before/after rebalancing, confusion matrices
  (classification tasks), predicted vs true valence/arousal over time (``va``), per-class scores.

A run folder that lacks a file or holds a broken one is still listed, with what is wrong.

Example::

    paths = build_report("runs", "reports")
    paths["html"], paths["markdown"]   # reports/index.html, reports/summary.md
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core import run_folder as rf
from core.run_folder import RunFolder, RunFolderError
from core.tasks import TASKS, TaskSpec
from evaluate import report_html as render
from evaluate.confusion import write_confusion
from evaluate.plots import plot_history, plot_label_distribution, plot_va_time
from evaluate.report_modalities import modality_tables
from extract.cache import CacheError, CacheReader, summary_path

log = logging.getLogger(__name__)

ID_COLUMNS = ("run", "dataset", "backbone", "model", "task", "rebalance", "seed", "epochs")


@dataclass
class Run:
    """What one run folder holds; absent or unreadable files are ``None`` and named in ``problems``."""

    run_id: str
    path: Path
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    history: pd.DataFrame | None = None
    distribution: dict | None = None
    predictions: pd.DataFrame | None = None
    problems: list[str] = field(default_factory=list)

    def get(self, key: str, default="?"):
        value = self.config.get(key, default)
        return default if value is None else value

    @property
    def task(self) -> str:
        return str(self.get("task", self.metrics.get("task", "?")))

    @property
    def spec(self) -> TaskSpec | None:
        """The task's entry, None for a task no longer (or not yet) registered."""
        return TASKS.get(self.task)

    @property
    def monitor(self) -> str | None:
        return self.spec.monitor if self.spec else None

    @property
    def score(self) -> float:
        """The task's validation metric, NaN when unknown."""
        value = self.metrics.get(self.monitor) if self.monitor else None
        return float(value) if isinstance(value, (int, float)) else math.nan

    @property
    def backbone(self) -> str:
        """The caches the run read: ``fer``, ``audio-logmel`` (audio alone), ``fer+audio-logmel``."""
        cache, audio = self.config.get("cache"), self.config.get("audio_cache")
        name = Path(cache).stem if cache else str(self.get("backbone"))
        return f"{name}+{Path(audio).stem}" if audio else name

    def epochs(self) -> str:
        """``<epochs run>/<max epochs>, best <n>`` (1-based), from metrics.json or history.csv."""
        ran = self.metrics.get("epochs_run", len(self.history) if self.history is not None else None)
        best = self.metrics.get("best_epoch")
        if best is None and self.history is not None and self.monitor and f"val_{self.monitor}" in self.history:
            values = self.history[f"val_{self.monitor}"].to_numpy(float)
            best = int(np.nanargmax(values)) if np.isfinite(values).any() else -1
        text = f"{ran if ran is not None else '?'}/{self.get('epochs')}"
        return text + (f", best {best + 1}" if isinstance(best, int) and best >= 0 else "")


def _read(run: Run, name: str, reader):
    path = run.path / name
    if not path.is_file():
        run.problems.append(f"{name} is missing")
        return None
    try:
        return reader()
    except (ValueError, OSError, pd.errors.ParserError) as err:  # JSONDecodeError is a ValueError
        run.problems.append(f"{name} is unreadable ({type(err).__name__}: {err})")
        return None


def load_run(path: str | Path) -> Run:
    """Reads one run folder (docs/run_format.md); never raises on a missing or broken file."""
    folder = RunFolder(path)
    run = Run(run_id=folder.name, path=folder.path)
    run.config = _read(run, rf.CONFIG, folder.read_config) or {}
    run.history = _read(run, rf.HISTORY, folder.read_history)
    run.distribution = _read(run, rf.LABEL_DISTRIBUTION, folder.read_distribution)
    run.predictions = _read(run, rf.PREDICTIONS, folder.read_predictions)
    if folder.metrics_path.is_file():
        run.metrics = _read(run, rf.METRICS, folder.read_metrics) or {}
    if not run.metrics and run.predictions is not None and run.spec is not None:
        try:
            run.metrics = run.spec.metrics(run.predictions, str(run.get("model")))
            run.problems.append("metrics.json is missing: scores recomputed from predictions_validation.csv")
        except ValueError as err:
            run.problems.append(f"predictions_validation.csv cannot be scored: {err}")
    elif not run.metrics:
        run.problems.append("metrics.json is missing and there are no predictions to score")
    return run


def collect_runs(runs_dir: str | Path) -> list[Run]:
    """Every sub-folder of ``runs_dir`` as a :class:`Run`, sorted by dataset, task, backbone, model,
    rebalance, seed and run id."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"{runs_dir}: no runs folder; train a model first (`make train`) or set RUNS_DIR")
    runs = [load_run(p) for p in sorted(runs_dir.iterdir()) if p.is_dir()]

    order = list(TASKS)

    def key(r: Run):
        task_rank = order.index(r.task) if r.task in order else len(order)
        return (
            str(r.get("dataset")),
            task_rank,
            r.backbone,
            str(r.get("model")),
            str(r.get("rebalance")),
            str(r.get("seed")),
            r.run_id,
        )

    return sorted(runs, key=key)


def runs_table(runs: list[Run]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The table of runs and a same-shaped boolean frame marking the best value per (dataset, task).

    Columns: :data:`ID_COLUMNS`, ``n_frames``, then the headline metrics of the tasks present (in
    ``TASKS`` order), NaN where a metric does not apply. Higher is better for every metric.
    """
    tasks = [t for t in TASKS if any(r.task == t for r in runs)]
    metric_cols = list(dict.fromkeys(m for t in tasks for m in TASKS[t].headline))
    rows = []
    for r in runs:
        row = {
            "run": r.run_id,
            "dataset": r.get("dataset"),
            "backbone": r.backbone,
            "model": r.get("model"),
            "task": r.task,
            "rebalance": r.get("rebalance"),
            "seed": r.get("seed"),
            "epochs": r.epochs(),
            "n_frames": r.metrics.get("n_frames", math.nan),
        }
        for m in metric_cols:
            value = r.metrics.get(m) if r.spec and m in r.spec.headline else None
            row[m] = float(value) if isinstance(value, (int, float)) else math.nan
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*ID_COLUMNS, "n_frames", *metric_cols])
    table["n_frames"] = table["n_frames"].astype("Int64")
    best = pd.DataFrame(False, index=table.index, columns=table.columns)
    for _, group in table.groupby(["dataset", "task"], sort=False):
        for m in metric_cols:
            values = group[m].astype(float)
            if values.notna().any():
                best.loc[values.index[values == values.max()], m] = True
    return table, best


def best_runs(runs: list[Run]) -> set[str]:
    """Run ids holding the best validation metric (the task's ``monitor``) of their (dataset, task)."""
    best: dict[tuple, tuple[float, list[str]]] = {}
    for r in runs:
        if math.isnan(r.score):
            continue
        key = (r.get("dataset"), r.task)
        top, ids = best.get(key, (-math.inf, []))
        if r.score > top:
            best[key] = (r.score, [r.run_id])
        elif r.score == top:
            ids.append(r.run_id)
    return {rid for _, ids in best.values() for rid in ids}


def _is_baseline(model: str) -> bool:
    from train.models import model_spec

    spec = model_spec(model)
    return bool(spec and spec.baseline)


def comparison_tables(runs: list[Run]) -> list[tuple[dict, pd.DataFrame]]:
    """Temporal models beside the baselines, one table per (dataset, backbone, task).

    Each row is a (model, rebalance) pair: ``kind`` (temporal or baseline), ``runs``, ``seeds``,
    ``mean`` and ``std`` (over its runs; 0 for one run) and ``best`` of the task's metric, and
    ``delta`` = mean minus the best baseline row's mean (NaN when the table has no baseline run).
    The key names that baseline (``baseline``, ``baseline_mean``).
    """
    out = []
    frame = pd.DataFrame(
        [
            {
                "dataset": r.get("dataset"),
                "backbone": r.backbone,
                "task": r.task,
                "rebalance": str(r.get("rebalance")),
                "model": str(r.get("model")),
                "seed": r.get("seed"),
                "score": r.score,
            }
            for r in runs
            if not math.isnan(r.score)
        ]
    )
    if frame.empty:
        return out
    for (dataset, backbone, task), group in frame.groupby(["dataset", "backbone", "task"], sort=False):
        by = group.groupby(["model", "rebalance"], sort=False)
        stats = by["score"].agg(["count", "mean", "std", "max"])
        seeds = by["seed"].agg(lambda s: ", ".join(str(v) for v in sorted(set(s), key=str)))
        models = stats.index.get_level_values("model")
        table = pd.DataFrame(
            {
                "model": models,
                "rebalance": stats.index.get_level_values("rebalance"),
                "kind": ["baseline" if _is_baseline(m) else "temporal" for m in models],
                "runs": stats["count"].to_numpy(int),
                "seeds": seeds.to_numpy(),
                "mean": stats["mean"].to_numpy(float),
                "std": stats["std"].fillna(0.0).to_numpy(float),
                "best": stats["max"].to_numpy(float),
            }
        )
        base = table[table["kind"] == "baseline"].sort_values("mean", ascending=False, kind="stable")
        key = {
            "dataset": dataset,
            "backbone": backbone,
            "task": task,
            "metric": TASKS[task].monitor,
            "baseline": None,
            "baseline_mean": math.nan,
        }
        if len(base):
            key.update(
                baseline=f"{base['model'].iloc[0]} ({base['rebalance'].iloc[0]})",
                baseline_mean=float(base["mean"].iloc[0]),
            )
        table["delta"] = table["mean"] - key["baseline_mean"]
        table = table.sort_values(["kind", "mean"], ascending=[False, False], kind="stable").reset_index(drop=True)
        out.append((key, table))
    return out


def extraction_table(runs: list[Run]) -> pd.DataFrame:
    """One row per feature cache the runs read: its ``.extract.json`` (last extraction run) and,
    when the cache file opens, its totals (videos, frames, face-hit rate over every stored frame)."""
    rows = []
    read = [[str(r.config[k]) for k in ("cache", "audio_cache") if r.config.get(k)] for r in runs]
    for cache in dict.fromkeys(c for caches in read for c in caches):
        row = {"cache": cache, "runs": sum(cache in caches for caches in read)}
        summary_file = summary_path(cache)
        note = []
        if summary_file.is_file():
            try:
                s = json.loads(summary_file.read_text())
                failed = s.get("failed", [])
                if "audio" in s:  # an audio cache's summary (extract.audio_run)
                    s = {**s, "backbone": f"audio-{s['audio']}", "mode": "audio", "faces": s.get("with_audio")}
                    s["face_hit_rate"] = s["with_audio"] / s["frames"] if s.get("frames") else None
                    s["frames_per_s"] = round(s["frames"] / s["seconds"], 1) if s.get("seconds") else None
                row.update(
                    {
                        "backbone": s.get("backbone"),
                        "backend": s.get("backend"),
                        "mode": s.get("mode"),
                        "run_frames": s.get("frames"),
                        "run_faces": s.get("faces"),
                        "run_face_hit_rate": s.get("face_hit_rate"),
                        "seconds": s.get("seconds"),
                        "frames_per_s": s.get("frames_per_s"),
                        "done": s.get("done"),
                        "failed": len(failed) if isinstance(failed, list) else failed,
                    }
                )
            except ValueError as err:
                note.append(f"{summary_file.name} unreadable ({err})")
        else:
            note.append(f"{summary_file.name} not found")
        try:
            info = CacheReader(cache).info()
            row.update({"videos": info["videos"], "frames": info["frames"], "face_hit_rate": info["face_hit_rate"]})
        except CacheError as err:
            note.append(str(err))
        row["note"] = "; ".join(note)
        rows.append(row)
    columns = [
        "cache",
        "runs",
        "backbone",
        "backend",
        "mode",
        "videos",
        "frames",
        "face_hit_rate",
        "run_frames",
        "run_faces",
        "run_face_hit_rate",
        "done",
        "failed",
        "seconds",
        "frames_per_s",
        "note",
    ]
    return pd.DataFrame(rows, columns=columns)


FIGURES_VERSION = 1  # bump when a figure changes, so reports redraw what they kept


def _fingerprint(run: Run) -> dict:
    """Size and mtime of the run files the figures are drawn from."""
    out: dict = {"version": FIGURES_VERSION}
    for name in rf.FIGURE_SOURCES:
        path = run.path / name
        if path.is_file():
            st = path.stat()
            out[name] = [st.st_size, st.st_mtime_ns]
    return out


def run_figures(run: Run, out_dir: Path) -> dict[str, Path]:
    """Draws one run's figures into ``out_dir``; returns file name -> path (PNG and CSV).

    A figure whose input is missing is skipped; one whose input is malformed is skipped and the
    reason added to ``run.problems``. Figures drawn by an earlier report from the same run files
    (``out_dir/figures.json`` records their sizes and times) are reused, not drawn again.
    """
    stamp = out_dir / "figures.json"
    fingerprint = _fingerprint(run)
    if stamp.is_file():
        try:
            kept = json.loads(stamp.read_text())
        except ValueError:
            kept = {}
        files = {name: out_dir / name for name in kept.get("files", [])}
        if kept.get("sources") == fingerprint and all(p.is_file() for p in files.values()):
            run.problems.extend(kept.get("problems", []))
            return files
    files = {}
    problems: list[str] = []
    jobs = []
    if run.history is not None and run.monitor:
        jobs.append(("history", lambda: [plot_history(run.history, run.monitor, out_dir / "history.png")]))
    if run.distribution is not None:
        jobs.append(
            (
                "label distribution",
                lambda: [plot_label_distribution(run.distribution, out_dir / "label_distribution.png")],
            )
        )
    plots = run.spec.plots if run.spec else ()
    if run.predictions is not None and "confusion" in plots:
        jobs.append(("confusion", lambda: write_confusion(run.predictions, run.spec, out_dir)))
    if run.predictions is not None and "va_time" in plots:
        jobs.append(("va time plot", lambda: [plot_va_time(run.predictions, out_dir / "va_time.png")]))
    for what, job in jobs:
        try:
            files.update({p.name: p for p in job()})
        except (KeyError, ValueError, TypeError) as err:
            problems.append(f"{what} figure not drawn: {type(err).__name__}: {err}")
    run.problems.extend(problems)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"sources": fingerprint, "files": sorted(files), "problems": problems}))
    return files


def build_report(runs_dir: str | Path, report_dir: str | Path) -> dict[str, Path]:
    """Writes ``index.html``, ``summary.md`` and ``runs/<run_id>/*`` figures into ``report_dir``.

    Args:
        runs_dir: RUNS_DIR, one sub-folder per run.
        report_dir: REPORT_DIR, created if missing; files of an earlier report are overwritten.

    Returns:
        ``{"html": ..., "markdown": ...}``.

    Raises:
        FileNotFoundError: ``runs_dir`` does not exist.
    """
    report_dir = Path(report_dir)
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / ".write-test").touch()
        (report_dir / ".write-test").unlink()
    except OSError as err:
        raise RunFolderError(
            f"{report_dir}: cannot write the report there ({err.strerror}); make REPORT_DIR writable or choose another"
        ) from err
    runs = collect_runs(runs_dir)
    figures = {}
    for r in runs:
        figures[r.run_id] = {
            k: p.relative_to(report_dir) for k, p in run_figures(r, report_dir / "runs" / r.run_id).items()
        }
        for problem in r.problems:
            log.warning("%s: %s", r.path, problem)
    table, best = runs_table(runs)
    context = render.Context(
        runs=runs,
        table=table,
        best=best,
        best_runs=best_runs(runs),
        comparisons=comparison_tables(runs),
        modalities=modality_tables(runs),
        caches=extraction_table(runs),
        figures=figures,
        runs_dir=str(runs_dir),
        generated=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    html_path, md_path = report_dir / "index.html", report_dir / "summary.md"
    for path, text in ((html_path, render.html_page(context)), (md_path, render.markdown(context))):
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    log.info("report of %d runs: %s, %s", len(runs), html_path, md_path)
    return {"html": html_path, "markdown": md_path}
