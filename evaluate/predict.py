"""``make predict RUN=<run id> SPLIT=<split>``: a trained run's predictions for every frame of a split.

Loads ``<run>/model.keras`` (``safe_mode=True``) and ``config.json``, reads the dataset table and
the run's feature cache, and predicts every cached frame of every sample of that split and task
with :func:`train.windows.predict_split` (the tiling windows the validation scores use: each frame
is predicted once, in context). Writes ``<RUNS_DIR>/<run id>/predictions_<split>/``:

- ``abaw_<task>.txt`` (tasks whose entry has ``submission``: ``va``, ``expr``, ``au``): the ABAW challenge submission
  format (ABAW 3-6 test-set prediction files): one header line, then one row per frame named
  ``<sample>/<frame:05d>.jpg`` (the sample is the ``cropped_aligned`` folder name, e.g.
  ``10-60-1280x720_right``), videos in sample-id order, frames in frame order:

  - va: ``image_location,valence,arousal``, two floats in [-1, 1];
  - expr: header ``image_location,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other``,
    rows ``<image_location>,<class index 0-7>`` (one predicted class per frame, as ABAW expects);
  - au: ``image_location,AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26``, each 0/1
    (probability >= 0.5).

- ``per_video/<sample>.csv``: ``frame_index, image_location, face, filled`` (audio-visual runs:
  ``heard``, the frame has audio) and the task's
  outputs (va: ``valence, arousal``; expr: ``class, class_name, prob_<class>``; au: ``<AU>`` 0/1
  and ``prob_<AU>``). Clip tasks (``clip``, ``eri``) have no frame rows: ``clips.csv`` holds one
  row per sample instead, and there is no ABAW file.
- ``summary.json``: counts, the face-less policy used, the cache and model read.

Frames without a face are predicted too (``--no-face``):

- ``model``: the model's own output at that frame. Every model sees the frame with its embedding
  zeroed and its face flag 0, so a recurrent model (gru, lstm, ...) fills the gap from the frames
  around it in the window, and ``avgpool`` gives the frame its window's mean-face prediction.
- ``nearest``: the prediction of the nearest frame with a face in the same video (by frame
  number; a tie takes the earlier frame). A video with no face at all keeps the model's output.
- ``auto`` (default): ``nearest`` for models whose ``train.models.MODELS`` entry has no temporal
  context (the per-frame ``frame`` model, never trained on face-less frames: they are masked out of
  the loss), ``model`` for the others.

The per-video CSV's ``filled`` column is 1 where ``nearest`` copied a prediction. An audio-visual
run predicts a frame without a face but with audio from its audio, under either policy; ``nearest``
fills only the frames with neither.

Example::

    summary = predict_run("runs/synthetic-fer-va-gru-none-s0-20250101-120000", "validation")
    summary["files"]["abaw"]
    # 'runs/synthetic-fer-va-gru-none-s0-20250101-120000/predictions_validation/abaw_va.txt'
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from core.run_folder import RunFolder, predictions_dir
from core.tasks import TASKS, TaskSpec
from data_manifests.loader import load_dataset
from data_manifests.schema import SPLITS
from evaluate import check_no_face, no_face_policy
from extract.cache import CacheReader
from train.config import TrainConfig
from train.data import SplitData, load_split, open_caches
from train.fusion import FUSIONS  # noqa: F401  (importing it registers the fused models' layers)
from train.models import MODELS  # importing it also registers the custom layers model.keras holds
from train.windows import predict_split

log = logging.getLogger(__name__)

# What must agree between the cache a run was trained on and the one it now reads.
CACHE_IDENTITY = ("backbone", "weights_sha256", "embedding_layer", "embedding_dim", "input_size", "preprocessing")


def submission_header(task: str) -> str:
    """The ABAW header line of a frame task (see the module docstring)."""
    spec = TASKS[task]
    if not spec.submission:
        have = [n for n, t in TASKS.items() if t.submission]
        raise ValueError(f"no ABAW submission format for task '{task}'; tasks with one: {', '.join(have)}")
    return spec.submission_header()


def image_locations(sample_ids: list[str], lengths: np.ndarray, frame_index: np.ndarray) -> np.ndarray:
    """``<sample>/<frame:05d>.jpg`` for every row of a split (samples concatenated)."""
    names = np.repeat(np.asarray(sample_ids, dtype=object), lengths)
    return np.array([f"{s}/{int(f):05d}.jpg" for s, f in zip(names, frame_index)], dtype=object)


def fill_nearest(
    pred: np.ndarray, face: np.ndarray, frame_index: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Copies, to every frame without a face, the prediction of the nearest face frame of its sample.

    Args:
        pred: ``[N, K]`` per-frame predictions. face: bool ``[N]``. frame_index: int ``[N]``.
        offsets: ``[S + 1]`` first row of each sample.

    Returns:
        ``(filled predictions, filled mask)``; samples without any face are left as they are.

    Example:

    >>> fill_nearest(np.array([[1.], [0.], [0.], [4.]]), np.array([1, 0, 0, 1], bool),
    ...              np.array([1, 2, 3, 4]), np.array([0, 4]))[0].ravel().tolist()
    [1.0, 1.0, 4.0, 4.0]
    """
    out = np.array(pred, copy=True)
    filled = np.zeros(len(face), bool)
    for lo, hi in zip(offsets[:-1], offsets[1:]):
        f = np.asarray(face[lo:hi], bool)
        if f.all() or not f.any():
            continue
        frames = np.asarray(frame_index[lo:hi], np.int64)
        idx = np.flatnonzero(f)
        j = np.searchsorted(idx, np.arange(hi - lo))
        left = idx[np.clip(j - 1, 0, len(idx) - 1)]
        right = idx[np.clip(j, 0, len(idx) - 1)]
        nearest = np.where(np.abs(frames - frames[left]) <= np.abs(frames[right] - frames), left, right)
        miss = np.flatnonzero(~f)
        out[lo + miss] = pred[lo + nearest[miss]]
        filled[lo + miss] = True
    return out, filled


def check_cache(reader: CacheReader, config: dict) -> None:
    """Refuses a cache whose backbone, weights or preprocessing differ from those the run trained on."""
    trained = config.get("cache_meta") or {}
    now = json.loads(json.dumps(dataclasses.asdict(reader.meta)))
    differ = [k for k in CACHE_IDENTITY if k in trained and trained[k] != now.get(k)]
    if differ:
        k = differ[0]
        raise ValueError(
            f"{reader.path}: {k} is {now.get(k)!r} but the run was trained on {trained[k]!r} "
            f"({config.get('cache')}); point CACHE_DIR at the cache the run used"
        )


def _caches(config: dict, cache_dir: str | None) -> tuple[CacheReader, CacheReader | None]:
    """The caches the run read (``cache_dir``: the same names there), each checked against the run's record."""
    cfg = TrainConfig(**{f.name: config[f.name] for f in dataclasses.fields(TrainConfig) if f.name in config})
    if cache_dir:
        reader, audio = open_caches(cache_dir, cfg.dataset, cfg)
    else:
        reader = CacheReader(Path(config["cache"]))
        audio = CacheReader(Path(config["audio_cache"])) if cfg.fused else None
    check_cache(reader, config)
    if audio is not None:
        check_cache(audio, {"cache": config["audio_cache"], "cache_meta": config.get("audio_cache_meta")})
    return reader, audio


def write_submission(path: Path, task: TaskSpec, locations: np.ndarray, pred: np.ndarray) -> Path:
    """The ABAW file of a frame task (module docstring): header line, one row per location."""
    frame = pd.DataFrame({"image_location": locations, **task.submission_values(pred)})
    with path.open("w", newline="") as f:
        f.write(task.submission_header() + "\n")
        frame.to_csv(f, header=False, index=False, float_format="%.6f", lineterminator="\n")
    return path


def _write_outputs(out: Path, split: SplitData, task: TaskSpec, pred: np.ndarray, filled: np.ndarray) -> dict:
    files: dict[str, str] = {}
    if split.task.level == "clip":
        clips = pd.DataFrame({"sample_id": split.sample_ids, **task.frame_outputs(pred)})
        clips.to_csv(out / "clips.csv", index=False, float_format="%.6f")
        return {"clips": str(out / "clips.csv")}
    locations = image_locations(split.sample_ids, split.lengths, split.frame_index)
    face = split.face[: split.n_frames]
    if task.submission:
        files["abaw"] = str(write_submission(out / f"abaw_{task.name}.txt", task, locations, pred))
    per_video = out / "per_video"
    per_video.mkdir()
    table = pd.DataFrame(
        {
            "frame_index": split.frame_index,
            "image_location": locations,
            "face": face.astype(np.int64),
            "filled": filled.astype(np.int64),
            **({} if split.heard is None else {"heard": split.heard[: split.n_frames].astype(np.int64)}),
            **task.frame_outputs(pred),
        }
    )
    for sample_id, lo, hi in zip(split.sample_ids, split.offsets[:-1], split.offsets[1:]):
        table.iloc[lo:hi].to_csv(per_video / f"{sample_id}.csv", index=False, float_format="%.6f")
    files["per_video"] = str(per_video)
    return files


def predict_run(
    run: str | Path,
    split: str,
    runs_dir: str | Path = "runs",
    data_root: str | None = None,
    cache_dir: str | None = None,
    no_face: str = "auto",
    batch_size: int | None = None,
    table: pd.DataFrame | None = None,
) -> dict:
    """Predicts every frame (or clip) of ``split`` with a run's saved model and writes the files.

    Args:
        run: a run id under ``runs_dir``, or a run folder.
        split: one of ``data_manifests.schema.SPLITS`` that the dataset labels for the run's task.
        runs_dir: RUNS_DIR.
        data_root: the dataset root; None: the run's ``config.json`` ``data_root``.
        cache_dir: read ``<cache_dir>/<dataset>/<backbone>.h5``; None: the cache the run read.
        no_face: ``auto``, ``model`` or ``nearest`` (module docstring).
        batch_size: windows per predict batch; None: the run's.
        table: the sample table (``data_manifests.schema.COLUMNS``); None loads the run's dataset
            from ``data_root`` with ``data_manifests.loader.load_dataset``.

    Returns:
        The ``summary.json`` content (also written): counts, policy, ``files``.

    Raises:
        FileNotFoundError: no such run or model. ValueError: an unknown split or policy, a split
        without samples of the run's task, samples missing in the cache, or a cache of another
        backbone or setting than the run's.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}")
    check_no_face(no_face)
    folder = RunFolder.resolve(str(run), runs_dir)
    run_dir = folder.path
    config = folder.read_config()
    model_path = folder.model_path
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: the run saved no model (did training finish?); train again")
    task = TASKS[config["task"]]
    model_spec = MODELS[config["model"]]  # an unknown name is a ConfigError listing the models
    dataset = config["dataset"]
    root = data_root or config.get("data_root") or f"data/{dataset}"
    if table is None:
        table = load_dataset(dataset, root)
    rows = table[(table["task"] == task.name) & (table["split"] == split)]
    if rows.empty:
        have = sorted(table.loc[table["task"] == task.name, "split"].unique())
        raise ValueError(
            f"{root}: dataset '{dataset}' has no '{split}' samples for task '{task.name}' "
            f"(splits with them: {', '.join(have) or 'none'}); choose SPLIT among those"
        )
    reader, audio = _caches(config, cache_dir)
    cache = reader.path
    stored = set(reader.video_ids())
    missing = [s for s in rows["sample_id"] if s not in stored]
    if missing:
        raise ValueError(
            f"{cache}: {len(missing)} of {len(rows)} '{split}' samples are not in the cache "
            f"(e.g. '{missing[0]}'); run `make extract` for this dataset and backbone so every "
            f"frame gets a prediction"
        )
    data, _ = load_split(reader, rows, task, audio=audio)
    model = keras.saving.load_model(model_path, safe_mode=True)
    start = time.perf_counter()
    pred = predict_split(model, data, int(config["seq_len"]), int(batch_size or config["batch_size"]))
    policy = no_face_policy(no_face, model_spec.context)
    filled = np.zeros(len(pred), bool)
    if task.level == "frame" and policy == "nearest":
        pred, filled = fill_nearest(pred, data.present[: data.n_frames], data.frame_index, data.offsets)
    seconds = time.perf_counter() - start

    out = run_dir / predictions_dir(split)
    work = out.with_name(out.name + ".partial")
    if work.exists():
        shutil.rmtree(work)  # left by an interrupted earlier call of this function
    work.mkdir()
    files = _write_outputs(work, data, task, pred, filled)
    face = data.face[: data.n_frames]
    summary = {
        "run": run_dir.name,
        "split": split,
        "task": task.name,
        "model": config["model"],
        "dataset": dataset,
        "data_root": str(root),
        "cache": str(cache),
        "samples": len(data.sample_ids),
        "frames": int(data.n_frames),
        "frames_without_face": int((~face).sum()),
        "frames_without_input": int((~data.present[: data.n_frames]).sum()),
        "no_face_policy": policy if task.level == "frame" else "clip tasks pool the face frames of each clip",
        "filled_from_nearest": int(filled.sum()),
        "seconds": round(seconds, 2),
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
        "files": {k: str(out / Path(v).relative_to(work)) for k, v in files.items()},
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)  # left by an interrupted earlier call of this function
        out.replace(old)
        work.replace(out)
        shutil.rmtree(old)
    else:
        work.replace(out)
    log.info(
        "%s: %d %s of %d samples -> %s",
        run_dir.name,
        summary["frames"] if task.level == "frame" else summary["samples"],
        "frames" if task.level == "frame" else "clips",
        summary["samples"],
        out,
    )
    return summary
