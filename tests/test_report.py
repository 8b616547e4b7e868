"""evaluate.report: the page and the summary over run folders built per docs/run_format.md (by hand
and by a real train.run.run_training), every image a real PNG, every run listed, the best marked."""

import dataclasses
import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.tasks import TASKS
from evaluate.__main__ import main
from evaluate.report import build_report, collect_runs, comparison_tables, extraction_table, runs_table
from extract.cache import CacheReader, summary_path
from tests.train_helpers import TINY, random_dataset
from train.config import TrainConfig
from train.run import run_training

pytestmark = pytest.mark.slow  # trains or extracts for seconds: `-m 'not slow'` skips it

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXTRACT_SUMMARY = {
    "frames": 1234,
    "faces": 1080,
    "face_hit_rate": 0.8752,
    "seconds": 3.84,
    "frames_per_s": 321.5,
    "done": 5,
    "failed": [],
    "backbone": "fer",
    "backend": "tensorflow",
    "mode": "frames",
    "config": {"dataset": "synthetic"},
}


class PageParser(HTMLParser):
    """Collects what the checks need: image sources, links, scripts, stylesheets and table rows."""

    def __init__(self):
        super().__init__()
        self.imgs, self.hrefs, self.scripts, self.links, self.rows = [], [], 0, 0, []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a["src"])
        elif tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        elif tag == "script":
            self.scripts += 1
        elif tag == "link":
            self.links += 1
        elif tag == "tr":
            self.rows.append((a.get("class") or "", []))
        elif tag in ("td", "th") and self.rows:
            self._cell = [a.get("class") or "", ""]
            self.rows[-1][1].append(self._cell)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data


def _series(rng, n, noise):
    t = np.linspace(0, 6, n)
    true = 0.6 * np.sin(t + rng.uniform(0, 3))
    return true, np.clip(true + rng.normal(0, noise, n), -1, 1)


def hand_run(
    runs: Path,
    task: str,
    model: str,
    noise: float,
    seed: int = 0,
    rebalance: str = "none",
    cache: str = "",
    epochs: int = 4,
) -> Path:
    """A run folder with every file of docs/run_format.md (model.keras aside: the report never reads it),
    predictions whose quality falls with ``noise`` and metrics computed from them by the task entry."""
    rng = np.random.default_rng(seed * 100 + int(noise * 1000))
    cfg = TrainConfig(task=task, model=model, rebalance=rebalance, seed=seed, epochs=epochs).resolved()
    run_dir = runs / f"synthetic-fer-{task}-{model}-{rebalance}-s{seed}-20250101-00000{int(noise * 10)}"
    run_dir.mkdir(parents=True)
    names = TASKS[task].labels.names
    frames = []
    for vid in ("vidA", "vidB_left"):
        n = 90
        base = {
            "sample_id": vid,
            "frame_index": np.arange(1, n + 1),
            "face": (np.arange(n) % 17 != 5).astype(int),
            "valid": (np.arange(n) % 23 != 7).astype(int),
        }
        if task == "va":
            tv, pv = _series(rng, n, noise)
            ta, pa = _series(rng, n, noise)
            cols = {"true_valence": tv, "true_arousal": ta, "pred_valence": pv, "pred_arousal": pa}
        elif task == "expr":
            true = rng.integers(0, len(names), n)
            pred = np.where(rng.random(n) < 1 - noise, true, rng.integers(0, len(names), n))
            probs = np.full((n, len(names)), 0.05)
            probs[np.arange(n), pred] = 0.65
            cols = {"true": true, "pred": pred, **{f"prob_{c}": probs[:, k] for k, c in enumerate(names)}}
        else:
            true = (rng.random((n, len(names))) < 0.3).astype(int)
            pred = np.where(rng.random((n, len(names))) < 1 - noise, true, 1 - true)
            cols = {
                **{f"true_{c}": true[:, k] for k, c in enumerate(names)},
                **{f"prob_{c}": pred[:, k] * 0.8 + 0.1 for k, c in enumerate(names)},
                **{f"pred_{c}": pred[:, k] for k, c in enumerate(names)},
            }
        frames.append(pd.DataFrame({**base, **cols}))
    pred = pd.concat(frames, ignore_index=True)
    assert list(pred.columns)[4:] == TASKS[task].column_names()
    pred.to_csv(run_dir / "predictions_validation.csv", index=False)
    monitor = TASKS[task].monitor
    metrics = TASKS[task].metrics(pred, model)
    curve = np.linspace(0.1, metrics[monitor], epochs)
    pd.DataFrame(
        {
            "epoch": range(epochs),
            "loss": np.linspace(1.0, 0.4, epochs),
            f"val_{monitor}": curve,
            "val_loss": np.linspace(1.1, 0.6, epochs),
        }
    ).to_csv(run_dir / "history.csv", index=False)
    metrics.update(epochs_run=epochs, best_epoch=epochs - 1)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    spec = TASKS[task]
    labels = (
        rng.uniform(-1, 1, (300, 2))
        if task == "va"
        else rng.integers(0, 8, (300, 1))
        if task == "expr"
        else (rng.random((300, len(names))) < 0.3).astype(float)
    )
    keep = rng.random(300) < (0.5 if rebalance != "none" else 1.0)
    dist = {
        "rebalance": rebalance,
        "unit": "frames",
        "before": spec.label_distribution(labels, np.ones(300, bool), 10),
        "after": spec.label_distribution(labels, keep, 10),
    }
    (run_dir / "label_distribution.json").write_text(json.dumps(dist))
    config = {
        **dataclasses.asdict(cfg),
        "keras_version": "3",
        "backend": "tensorflow",
        "cache": cache,
        "cache_meta": {"backbone": "fer"},
        "data": {"split": "official"},
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "logs").mkdir()
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Hand-built runs of three tasks, one real run_training run, a crashed and a broken run."""
    tmp = tmp_path_factory.mktemp("report")
    runs = tmp / "runs"
    cache, table = random_dataset(tmp / "cache", "expr", n_videos=4, n_val=2)
    summary_path(cache).write_text(json.dumps(EXTRACT_SUMMARY))
    real = run_training(
        TrainConfig(
            cache_dir=str(tmp / "cache"),
            runs_dir=str(runs),
            task="expr",
            model="gru",
            **TINY,
        ),
        table=table,
    )
    built = {
        "va_gru": hand_run(runs, "va", "gru", 0.1, cache=str(cache)),
        "va_gru_s1": hand_run(runs, "va", "gru", 0.3, seed=1, cache=str(cache)),
        "va_frame": hand_run(runs, "va", "frame", 0.6, cache=str(cache)),
        "va_lstm_hist": hand_run(runs, "va", "lstm", 0.4, rebalance="va-hist"),
        "expr_frame": hand_run(runs, "expr", "frame", 0.7),
        "au_gru": hand_run(runs, "au", "gru", 0.2),
        "real": real,
    }
    crashed = runs / "synthetic-fer-va-gru-none-s3-20250101-000009"
    crashed.mkdir()
    (crashed / "config.json").write_text(json.dumps({**dataclasses.asdict(TrainConfig(task="va")), "cache": ""}))
    broken = runs / "broken-run"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    built.update(crashed=crashed, broken=broken)
    return runs, built, cache


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    runs_dir, built, _ = runs
    out = tmp_path_factory.mktemp("out") / "report"
    paths = build_report(runs_dir, out)
    return out, paths


def _score(run_dir: Path, key: str) -> float:
    return json.loads((run_dir / "metrics.json").read_text())[key]


def test_every_image_exists_and_is_a_png(report):
    out, paths = report
    page = PageParser()
    page.feed(paths["html"].read_text())
    assert len(page.imgs) >= 15
    for src in page.imgs:
        assert not re.match(r"^[a-z]+:", src) and not src.startswith("/"), src  # relative, no network
        path = out / unquote(src)
        assert path.is_file(), src
        assert path.read_bytes()[:8] == PNG_SIGNATURE, src
        with Image.open(path) as im:
            im.verify()
        assert matplotlib.image.imread(path).ndim == 3
    for href in page.hrefs:
        assert href.startswith("#") or (out / unquote(href)).is_file(), href
    assert page.scripts == 0 and page.links == 0  # no script, no external stylesheet


def test_every_run_is_listed_with_its_figures(runs, report):
    _, built, _ = runs
    out, paths = report
    html, md = paths["html"].read_text(), paths["markdown"].read_text()
    for run_dir in built.values():
        assert run_dir.name in html and run_dir.name in md
    for key in ("va_gru", "va_frame"):
        assert f"runs/{built[key].name}/va_time.png" in html
    for name in ("history.png", "label_distribution.png", "confusion_counts.png", "confusion_normalised.png"):
        assert f"runs/{built['real'].name}/{name}" in html
    assert f"runs/{built['au_gru'].name}/confusion_au.png" in html
    counts = pd.read_csv(out / "runs" / built["real"].name / "confusion_counts.csv", index_col=0)
    assert counts.to_numpy().sum() == json.loads((built["real"] / "metrics.json").read_text())["n_frames"]
    assert "metrics.json is missing and there are no predictions to score" in html
    assert "config.json is unreadable (JSONDecodeError" in html and "config.json is unreadable" in md
    # The report says which formula each task's score uses (the ABAW EXPR convention among them).
    for text in (html, md):
        assert "How the scores are computed" in text and "summed and divided by 8 (ABAW" in text
        assert "ccc_mean = (CCC valence + CCC arousal) / 2" in text and "au_f1_mean = the binary F1" in text


def test_best_per_task_is_marked(runs, report):
    _, built, _ = runs
    _, paths = report
    page = PageParser()
    page.feed(paths["html"].read_text())
    by_run = {cells[0][1].strip(): (cls, cells) for cls, cells in page.rows if cells and cells[0][0] == "runid"}
    va = [k for k in built if k.startswith("va_")]
    best_va = max(va, key=lambda k: _score(built[k], "ccc_mean"))
    assert best_va == "va_gru"
    for key in va:
        cls, cells = by_run[built[key].name]
        assert (cls == "bestrun") == (key == best_va)
    header = next(
        cells for cls, cells in page.rows if cells and cells[0][1] == "run" and "ccc_mean" in [c[1] for c in cells]
    )
    col = [c[1] for c in header].index("ccc_mean")
    best_cell = by_run[built["va_gru"].name][1][col]
    assert best_cell == ["best", f"{_score(built['va_gru'], 'ccc_mean'):.3f}"]
    assert by_run[built["va_frame"].name][1][col][0] == ""
    # one best per task: the only expr runs are the real gru and a noisy frame baseline
    expr_best = max(("real", "expr_frame"), key=lambda k: _score(built[k], "f1_macro"))
    assert by_run[built[expr_best].name][0] == "bestrun"
    assert by_run[built["au_gru"].name][0] == "bestrun"  # alone in its task

    md = paths["markdown"].read_text()
    assert f"**{_score(built['va_gru'], 'ccc_mean'):.3f}**" in md
    assert re.search(rf"\[{re.escape(built['va_gru'].name)}\]\([^)]*\) ★", md)
    assert not re.search(rf"\[{re.escape(built['va_frame'].name)}\]\([^)]*\) ★", md)


def test_temporal_models_beside_baselines(runs, report):
    runs_dir, built, _ = runs
    tables = {key["task"]: (key, t) for key, t in comparison_tables(collect_runs(runs_dir))}
    key, va = tables["va"]
    assert key["baseline"] == "frame (none)"
    gru = va[(va.model == "gru") & (va.rebalance == "none")].iloc[0]
    scores = [_score(built[k], "ccc_mean") for k in ("va_gru", "va_gru_s1")]
    frame = _score(built["va_frame"], "ccc_mean")
    assert gru["runs"] == 2 and gru["seeds"] == "0, 1" and gru["kind"] == "temporal"
    assert gru["mean"] == pytest.approx(np.mean(scores)) and gru["std"] == pytest.approx(np.std(scores, ddof=1))
    assert gru["delta"] == pytest.approx(np.mean(scores) - frame)
    lstm = va[va.model == "lstm"].iloc[0]
    assert lstm["rebalance"] == "va-hist" and lstm["delta"] == pytest.approx(
        _score(built["va_lstm_hist"], "ccc_mean") - frame
    )
    key_au, au = tables["au"]
    assert key_au["baseline"] is None and math.isnan(au["delta"].iloc[0])
    md = report[1]["markdown"].read_text()
    assert f"+{np.mean(scores) - frame:.3f}" in md
    assert "no baseline run" in md


def test_extraction_summary_of_each_cache(runs, report):
    _, built, cache = runs
    html, md = report[1]["html"].read_text(), report[1]["markdown"].read_text()
    for text in (str(cache), "1234 frames, 87.5% with a face, 5 videos done, 0 failed, 3.8 s, 321.5 frames/s"):
        assert text in html and text in md
    # totals come from the cache file itself: the 4 videos random_dataset wrote, 60 + 73 + 86 + 99 frames
    caches = extraction_table(collect_runs(runs[0])).set_index("cache")
    row = caches.loc[str(cache)]
    reader = CacheReader(cache)
    faces = sum(int(reader.read(v).face_mask.sum()) for v in reader.video_ids())
    assert (row["videos"], row["frames"], row["runs"]) == (4, 318, 4)
    assert row["face_hit_rate"] == pytest.approx(faces / 318) and row["note"] == ""
    assert f"{faces / 318:.1%}" in html
    no_cache = caches.loc[""] if "" in caches.index else None
    assert no_cache is None  # runs that record no cache add no row


def test_runs_table_columns(runs):
    table, best = runs_table(collect_runs(runs[0]))
    assert list(table.columns[:9]) == [
        "run",
        "dataset",
        "backbone",
        "model",
        "task",
        "rebalance",
        "seed",
        "epochs",
        "n_frames",
    ]
    assert {"ccc_mean", "f1_macro", "accuracy", "au_f1_mean"} <= set(table.columns)
    real = table[table.run.str.contains("expr-gru")].iloc[0]
    assert real["epochs"].startswith("2/2") and math.isnan(real["ccc_mean"])
    assert best.loc[table.task == "va", "ccc_mean"].sum() == 1


def test_report_reuses_figures_until_a_run_changes(runs, report, tmp_path):
    runs_dir, built, _ = runs
    shutil.copytree(report[0], tmp_path, dirs_exist_ok=True)  # copy2 keeps the files' times
    png = tmp_path / "runs" / built["va_frame"].name / "history.png"
    other = tmp_path / "runs" / built["va_gru"].name / "history.png"
    before, other_before = png.stat().st_mtime_ns, other.stat().st_mtime_ns
    hist = built["va_frame"] / "history.csv"
    original = hist.read_text()
    try:
        hist.write_text(original + "4,0.3,0.2,0.5\n")
        build_report(runs_dir, tmp_path)
    finally:
        hist.write_text(original)
    assert png.stat().st_mtime_ns != before and other.stat().st_mtime_ns == other_before


def test_cli_report_and_errors(runs, report, tmp_path, capsys):
    assert main(["report", "--runs-dir", str(runs[0]), "--report-dir", str(report[0])]) == 0
    assert json.loads(capsys.readouterr().out)["html"] == str(report[0] / "index.html")
    assert main(["report", "--runs-dir", str(tmp_path / "nope"), "--report-dir", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'nope'}: no runs folder;") and "RUNS_DIR" in err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "{report,predict,analyze}" in capsys.readouterr().out
