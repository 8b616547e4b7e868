"""``make analyze VIDEO=<file or folder> RUN=<run id>``: a trained run on videos of no dataset.

Stage one runs with the run's own backbone, weights and face settings (read from the run's
``config.json`` and the extraction summary beside the cache it trained on: nothing to repeat),
through the same pipeline as ``make extract`` (worker processes, batched inference, keyframes
when the run's extraction used them), into ``ANALYSIS_DIR/.cache/<run id>/``. Then the run's model
predicts every frame, one video at a time, with the tiling windows ``make predict`` uses.

Each video gets ``ANALYSIS_DIR/<video>/``:

- ``frames.csv`` (and ``frames.parquet`` when pyarrow is installed): one row per decoded frame:
  ``frame`` (1-based), ``timestamp`` (seconds), ``face``, ``score`` (detector), ``x0, y0, x1, y1``
  (the face box in pixels; empty without a face), ``filled`` (1: a face-less frame given its nearest
  face frame's prediction) and the task's outputs (``make predict``'s columns: expr ``class,
  class_name, prob_<class>``; va ``valence, arousal``; au ``<AU>`` 0/1 and ``prob_<AU>``; eri the
  7 intensities, from the window that holds the frame);
- ``overlay.mp4`` (``evaluate.overlay``), ``timeline.png``, and ``summary.json``, written last: a
  video whose folder has a summary of this run and of the same source is skipped on the next call.

A file that is not a video, a video without frames: one line each, naming the file; the others go on.

Example::

    result = analyze(AnalyzeConfig(video="tests/media", run="synthetic-fer-expr-gru-none-s0-..."))
    result["videos"][0]["frames"], result["problems"]
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.run_folder import RunFolder
from core.tasks import TASKS, TaskSpec
from extract.cache import cache_path, summary_path

log = logging.getLogger(__name__)

FRAMES, PARQUET, OVERLAY, TIMELINE, SUMMARY = (
    "frames.csv",
    "frames.parquet",
    "overlay.mp4",
    "timeline.png",
    "summary.json",
)
CACHE_FOLDER = ".cache"
DEFAULT_FPS = 25.0
# What the run's cache fixes about the embeddings, and how faces were found (only when it read videos).
BACKBONE_FIELDS = ("weights", "embedding_layer", "precision")
FACE_FIELDS = ("detector", "min_score", "margin", "align", "detect_every")


@dataclass(frozen=True)
class AnalyzeConfig:
    """``python -m evaluate analyze``'s flags are generated from these fields.

    Args:
        video: VIDEO: a video file, or a folder whose files are all analysed.
        run: RUN: a run id in runs_dir, or a run folder.
        runs_dir: RUNS_DIR.
        analysis_dir: ANALYSIS_DIR: one ``<video>/`` folder per video, and the feature cache.
        workers: decode/detect processes; 0: one per core.
        batch: crops per backbone call.
        detect_every: DETECT_EVERY: 0: the run's extraction setting; N: run the face detector every N frames.
        no_face: prediction for frames without a face: auto, model or nearest (as ``make predict``).
        overlay: write overlay.mp4 (--no-overlay: the table, the timeline and the summary only).
    """

    video: str = ""
    run: str = ""
    runs_dir: str = "runs"
    analysis_dir: str = "analysis"
    workers: int = 0
    batch: int = 256
    detect_every: int = 0
    no_face: str = "auto"
    overlay: bool = True


def find_videos(path: str | Path) -> tuple[list[Path], list[str]]:
    """The videos at ``path`` (a file, or every file of a folder) and one line per unreadable file."""
    from extract.sources import SourceError, probe_video

    root = Path(path)
    if not str(path) or not root.exists():
        raise FileNotFoundError(f"{root}: no such video file or folder; set VIDEO=<file or folder>")
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")) if root.is_dir() else [root]
    videos, problems = [], []
    for file in files:
        try:
            probe_video(file)
        except SourceError as err:
            problems.append(str(err))
            continue
        videos.append(file)
    return videos, problems


def video_ids(videos: list[Path]) -> list[str]:
    """Output folder names: the file stem, or the whole name where two files share a stem."""
    stems = [v.stem for v in videos]
    return [v.stem if stems.count(v.stem) == 1 else v.name.replace(".", "_") for v in videos]


def extraction_config(config: dict, cfg: AnalyzeConfig, cache_dir: Path, dataset: str):
    """The ``ExtractConfig`` that embeds new videos as the run's cache was embedded, and its source."""
    from extract.pipeline import ExtractConfig

    stored, source = {}, "the backbone's defaults (the run's cache has no extraction summary)"
    path = summary_path(config["cache"]) if config.get("cache") else None
    if path is not None and path.is_file():
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: unreadable extraction summary ({err}); run `make extract` again") from err
        video = summary.get("mode") == "video"
        fields = BACKBONE_FIELDS + (FACE_FIELDS if video else ())
        stored = {k: summary["config"][k] for k in fields if k in summary.get("config", {})}
        source = str(path) + ("" if video else " (dataset crops: the face settings are the backbone's defaults)")
    if cfg.detect_every:
        stored["detect_every"] = cfg.detect_every
    extract_cfg = ExtractConfig(
        dataset=dataset,
        cache_dir=str(cache_dir),
        backbone=config["backbone"],
        input="video",
        workers=cfg.workers,
        batch=cfg.batch,
        refresh=True,
        **stored,
    )
    return extract_cfg, source


def _samples(videos: list[Path], ids: list[str]) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame(
        {
            "sample_id": ids,
            "video": ids,
            "subject": ids,
            "side": [""] * n,
            "media_path": [str(v) for v in videos],
            "frames_dir": [""] * n,
            "n_frames": np.zeros(n, np.int64),
        }
    )


def _is_complete(folder: Path, run_id: str, source: Path) -> bool:
    from extract.fingerprint import fingerprint

    try:
        summary = json.loads((folder / SUMMARY).read_text())
    except (OSError, ValueError):
        return False
    return summary.get("run") == run_id and summary.get("source_fingerprint") == fingerprint(source)


def analyze(cfg: AnalyzeConfig) -> dict:
    """Analyses every video of ``cfg.video`` not yet analysed by this run; returns what was done.

    Returns:
        ``run``, ``videos`` (each one's summary), ``skipped`` (complete from an earlier call),
        ``problems`` (one line per file that could not be analysed), ``seconds``, ``frames_per_s``.
    """
    from evaluate import check_no_face
    from extract.cache import CacheReader
    from extract.pipeline import extract_table

    start = time.perf_counter()
    check_no_face(cfg.no_face)
    folder = RunFolder.resolve(cfg.run, cfg.runs_dir)
    config = folder.read_config()
    if not folder.model_path.is_file():
        raise FileNotFoundError(f"{folder.model_path}: the run saved no model (did training finish?); train again")
    videos, problems = find_videos(cfg.video)
    ids = video_ids(videos)
    out_root = Path(cfg.analysis_dir)
    run_id = folder.path.name
    todo = [(v, i) for v, i in zip(videos, ids) if not _is_complete(out_root / i, run_id, v)]
    result = {"run": run_id, "videos": [], "skipped": [i for v, i in zip(videos, ids) if (v, i) not in todo]}
    if todo:
        extract_cfg, source = extraction_config(config, cfg, out_root / CACHE_FOLDER, run_id)
        log.info("extracting %d videos with the settings of %s", len(todo), source)
        summary = extract_table(extract_cfg, _samples([v for v, _ in todo], [i for _, i in todo]), "video")
        problems += [f["reason"] for f in summary["failed"]]
        failed = {f["path"] for f in summary["failed"]}
        from evaluate.predict import check_cache  # imports the backend: after stage one, whose workers need the cores

        reader = CacheReader(cache_path(extract_cfg.cache_dir, extract_cfg.dataset, extract_cfg.backbone))
        check_cache(reader, config)
        predictor = _Predictor(folder, config, cfg.no_face)
        for video, vid in todo:
            if str(video) not in failed:
                result["videos"].append(predictor.write(reader, video, vid, out_root / vid, cfg.overlay, source))
    seconds = time.perf_counter() - start
    frames = sum(v["frames"] for v in result["videos"])
    return {**result, "problems": problems, "seconds": round(seconds, 2), "frames_per_s": round(frames / seconds, 1)}


class _Predictor:
    """The run's model, loaded once, and what turns one cached video into its output folder."""

    def __init__(self, folder: RunFolder, config: dict, no_face: str):
        import keras

        import core.losses  # noqa: F401  (registers the losses model.keras was compiled with)
        from evaluate import no_face_policy
        from train.models import MODELS  # importing it also registers the custom layers model.keras holds

        self.run_id = folder.path.name
        self.config = config
        self.task: TaskSpec = TASKS[config["task"]]
        self.policy = no_face_policy(no_face, MODELS[config["model"]].context)
        self.model = keras.saving.load_model(folder.model_path, safe_mode=True)

    def write(self, reader, video: Path, vid: str, out: Path, overlay: bool, source: str) -> dict:
        from evaluate.overlay import plot_timeline, write_overlay
        from extract.sources import probe_video

        feats = reader.read(vid)
        pred, filled = self.predict(feats)
        fps = probe_video(video).fps
        rate = fps if fps > 0 else DEFAULT_FPS  # a container without a frame rate: timestamps at 25/s
        table = frames_table(feats, pred, filled, self.task, rate)
        work = out.with_name(out.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)  # left by an interrupted earlier call
        work.mkdir(parents=True)
        table.to_csv(work / FRAMES, index=False, float_format="%.6f")
        files = [FRAMES]
        if _has_pyarrow():
            table.to_parquet(work / PARQUET, index=False)
            files.append(PARQUET)
        plot_timeline(table, self.task, f"{video.name}: {self.task.name} ({self.config['model']})", work / TIMELINE)
        files.append(TIMELINE)
        drawn = write_overlay(video, work / OVERLAY, table, self.task, rate) if overlay else None
        files += [OVERLAY] if overlay else []
        summary = {
            "video": str(video),
            "folder": str(out),
            "run": self.run_id,
            "task": self.task.name,
            "model": self.config["model"],
            "frames": int(len(table)),
            "faces": int(table["face"].sum()),
            "video_seconds": round(len(table) / rate, 2),
            "fps": fps,
            "no_face_policy": self.policy,
            "filled_from_nearest": int(table["filled"].sum()),
            "extraction_settings": source,
            "cache": str(reader.path),
            "overlay": drawn,
            "files": files,
            "source_fingerprint": reader.fingerprints()[vid],  # of the file these embeddings came from
        }
        (work / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        work.replace(out)
        log.info(
            "%s: %d frames (%.1f s), %d with a face -> %s",
            video.name,
            len(table),
            summary["video_seconds"],
            summary["faces"],
            out,
        )
        return summary

    def predict(self, feats) -> tuple[np.ndarray, np.ndarray]:
        """``[N, K]`` per frame and the filled mask; clip tasks: the output of the window holding the frame."""
        from evaluate.predict import fill_nearest
        from train.windows import predict_frames

        split = unlabelled_split(self.task, feats)
        seq_len, batch = int(self.config["seq_len"]), int(self.config["batch_size"])
        pred = predict_frames(self.model, split, seq_len, batch)
        filled = np.zeros(len(pred), bool)
        if self.policy == "nearest":
            pred, filled = fill_nearest(pred, split.face[:-1], split.frame_index, split.offsets)
        return pred, filled


def unlabelled_split(task: TaskSpec, feats):
    """One video's cached rows as a ``train.data.SplitData`` without labels (nothing is scored)."""
    from train.data import SplitData

    n = len(feats.frame_index)
    units = n if task.level == "frame" else 1
    return SplitData(
        task=task,
        sample_ids=["video"],
        offsets=np.array([0, n], np.int64),
        x=np.concatenate([feats.embeddings, np.zeros((1, feats.embeddings.shape[1]), feats.embeddings.dtype)]),
        face=np.concatenate([feats.face_mask, [False]]),
        frame_index=feats.frame_index.astype(np.int32),
        labels=np.zeros((units, task.outputs), np.float32),
        valid=np.zeros(units, bool),
        keep=np.ones(units, bool),
    )


def frames_table(feats, pred: np.ndarray, filled: np.ndarray, task: TaskSpec, fps: float) -> pd.DataFrame:
    """``frames.csv``: one row per cached frame (module docstring), a face-less frame kept."""
    face = np.asarray(feats.face_mask, bool)
    box = np.where(face[:, None], np.asarray(feats.bbox, np.float64), np.nan)
    frame = np.asarray(feats.frame_index, np.int64)
    return pd.DataFrame(
        {
            "frame": frame,
            "timestamp": (frame - 1) / fps,
            "face": face.astype(np.int64),
            "score": np.where(face, np.asarray(feats.score, np.float64), np.nan),
            **{name: box[:, k] for k, name in enumerate(("x0", "y0", "x1", "y1"))},
            "filled": filled.astype(np.int64),
            **task.frame_outputs(pred),
        }
    )


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True
