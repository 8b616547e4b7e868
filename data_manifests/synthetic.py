"""The built-in synthetic dataset: an Aff-Wild2-layout tree drawn from a seed, in seconds.

``python -m data_manifests.synthetic --out data/synthetic --seed 0`` writes::

    <out>/cropped_aligned/<sample>/00001.jpg ...      112x112; a frame whose face is lost has no jpg
    <out>/annotations/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<sample>.txt
    <out>/annotations/EXPR_Classification_Challenge/{Train_Set,Validation_Set}/<sample>.txt
    <out>/annotations/AU_Detection_Challenge/{Train_Set,Validation_Set}/<sample>.txt
    <out>/videos/<video>.mp4                          raw 320x240 clips of a few videos, with sound
    <out>/wav/<video>.wav                             16 kHz sound of every video but one (synthetic_voice)
    <out>/subjects.csv                                sample_id,video,subject,side,split
    <out>/README.txt, <out>/.synthetic_complete       seed and version; the stamp is written last

Three modules: :mod:`data_manifests.synthetic_timeline` decides what happens in each frame
(expression events, facial actions and the labels derived from them, camera nuisance),
:mod:`data_manifests.synthetic_faces` draws a face from its actions, and this one casts subjects
into videos, splits them train/validation without overlap (with Aff-Wild2's class imbalance,
yet every class in both splits), composes the frames and writes the files.

Example::

    summary = generate(Path("data/synthetic-small"), seed=0, n_clips=4, min_frames=30, max_frames=40)
    summary["n_samples"], summary["skipped"]
    # (5, False)
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from data_manifests import synthetic_faces as faces
from data_manifests import synthetic_voice as voice
from data_manifests.schema import EXPR_CLASSES, LABELS, DatasetError
from data_manifests.synthetic_timeline import invalidate, nuisance, timeline

VERSION = "2"  # 2: every video but one has sound (wav/ and the raw mp4s' AAC tracks)
STAMP = ".synthetic_complete"
README_TITLE = "Synthetic Aff-Wild2-layout dataset"
CROP = 112
ZOOM = 1.3  # crops show the face from brow to chin, like Aff-Wild2's aligned crops
RAW_SIZE = (320, 240)
FPS = 30
CHALLENGES = {
    "va": "VA_Estimation_Challenge",
    "expr": "EXPR_Classification_Challenge",
    "au": "AU_Detection_Challenge",
}
SPLIT_DIRS = {"train": "Train_Set", "validation": "Validation_Set"}
# The default tree: ~3.3k frames, which later stages extract and train on in minutes on 2 cores.
DEFAULTS = {"n_clips": 24, "min_frames": 80, "max_frames": 170, "raw_videos": 4}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplePlan:
    """One sample to draw: a video, or one side of a two-subject video."""

    sample_id: str
    video: str
    subject: faces.Subject
    side: str
    split: str
    forced: tuple[int, ...]
    seed: tuple[int, ...]


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A textured scene (smooth colour field, a few boxes, grain): BGR uint8 [height, width, 3]."""
    grey = rng.uniform(50, 200, (4, 5, 1))
    tint = 0.35 * rng.uniform(40, 210, (4, 5, 3)) + 0.65 * grey  # rooms are mostly unsaturated
    field = cv2.resize(tint.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1, y1 = x0 + rng.integers(20, width // 2), y0 + rng.integers(20, height // 2)
        color = 0.5 * rng.uniform(30, 230, 3) + 0.5 * rng.uniform(30, 230)
        cv2.rectangle(field, (int(x0), int(y0)), (int(x1), int(y1)), color.tolist(), -1)
    field = cv2.GaussianBlur(field, (0, 0), 2.0) + rng.normal(0, 6, field.shape).astype(np.float32)
    return np.clip(field, 0, 255).astype(np.uint8)


def warp(
    img: np.ndarray, dx: float, dy: float, rot: float, scale: float, border: int = cv2.BORDER_REFLECT101
) -> np.ndarray:
    """Head pose in the image plane: rotate (degrees) and scale about the centre, then shift
    (``dx, dy`` in image widths)."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rot, scale)
    m[:, 2] += (dx * w, dy * h)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=border)


def composite(dst: np.ndarray, src: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend ``src`` onto ``dst`` in place with its top-left corner at ``(x, y)``; clipped."""
    h, w = src.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, dst.shape[1]), min(y + h, dst.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x, None].astype(np.float32) / 255
    region = dst[y0:y1, x0:x1].astype(np.float32)
    dst[y0:y1, x0:x1] = (src[y0 - y : y1 - y, x0 - x : x1 - x] * a + region * (1 - a)).astype(np.uint8)


def photometric(
    img: np.ndarray, gain: float, grad: float, cast, blur: float, noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Camera and light: global gain, a left-right light gradient, colour cast, blur, sensor noise.

    Args:
        img: BGR uint8.
        gain: brightness factor; grad: relative brightness change from the left edge to the
            centre (and the opposite to the right edge); cast: BGR factors.
        blur: Gaussian sigma in pixels (0: none); noise: sigma of additive noise (grey levels).
        rng: the noise source.
    """
    w = img.shape[1]
    ramp = 1 + grad * np.linspace(-1, 1, w, dtype=np.float32)
    out = img.astype(np.float32) * (gain * ramp[None, :, None] * np.asarray(cast, np.float32))
    if blur > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    if noise > 0:
        h, w = out.shape[:2]
        y, x = rng.integers(0, h), rng.integers(0, w)
        out += noise * _noise_bank(h, w)[y : y + h, x : x + w]
    return np.clip(out, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _noise_bank(h: int, w: int) -> np.ndarray:
    """Unit Gaussian noise twice the frame size; frames take shifted windows of it, which is
    ~100x cheaper than drawing fresh noise and, at a random offset per frame, just as varied."""
    return np.random.default_rng(0).standard_normal((2 * h, 2 * w, 3), np.float32)


def _crop_frame(face, alpha, bg, nz, t, rng):
    """The aligned 112x112 crop of frame ``t``: residual pose, light, blur, noise."""
    a = alpha.astype(np.float32) / 255
    img = cv2.blendLinear(face.astype(np.float32), bg, a, 1 - a).astype(np.uint8)
    img = warp(img, nz["dx"][t], nz["dy"][t], nz["rot"][t], nz["scale"][t])
    return photometric(img, nz["gain"][t], nz["grad"][t], nz["cast"], nz["blur"][t], nz["noise"][t], rng)


def _occlude(face, alpha, nz, t, zoom=1.0):
    for s, end, kind, x, y, v, color in nz["occ"]:
        if s <= t < end:
            faces.draw_occluder(face, alpha, kind, x + v[0] * (t - s), y + v[1] * (t - s), color, zoom)


def plan(seed: int, n_clips: int, min_frames: int, max_frames: int, raw_videos: int) -> list[dict]:
    """Who appears in which video, the subject-disjoint split, and each sample's forced classes.

    Returns:
        one dict per video: ``video`` name, ``samples`` (1 or 2 :class:`SamplePlan`),
        ``n_frames`` (wanted), ``raw`` (whether an mp4 is written), ``tasks`` (challenges that
        annotate it: as in Aff-Wild2, a few videos are missing from one challenge).
    """
    rng = np.random.default_rng(seed)
    n_subj = max(3, round(n_clips / 3))
    subjects = [faces.random_subject(rng, f"s{i + 1:02d}", i) for i in range(n_subj)]
    shuffled = [subjects[i] for i in rng.permutation(n_subj)]
    n_val = max(1, round(n_subj / 3))
    split = {s.name: "validation" if k >= n_subj - n_val else "train" for k, s in enumerate(shuffled)}
    # Interleave the splits so that dealing videos round-robin gives each split its share.
    rank = {
        s.name: (k + 0.5) / (n_subj - n_val) if k < n_subj - n_val else (k - n_subj + n_val + 0.5) / n_val
        for k, s in enumerate(shuffled)
    }
    order = sorted(shuffled, key=lambda s: rank[s.name])
    groups = []
    for sp in ("train", "validation")[: 1 if n_clips < 8 else 2]:
        pair = [s for s in order if split[s.name] == sp][:2]
        if len(pair) == 2:
            groups.append(list(zip(pair, ("left", "right"))))
    groups += [[(order[k % n_subj], "")] for k in range(n_clips - len(groups))]
    groups = [groups[i] for i in rng.permutation(len(groups))]
    raw = [i for i, g in enumerate(groups) if len(g) == 2]
    for sp in ("train", "validation"):
        raw += [i for i, g in enumerate(groups) if len(g) == 1 and split[g[0][0].name] == sp][:1]
    raw = set(raw[:raw_videos])
    # One raw clip has no sound at all (no track, no WAV), as a real corpus has a few.
    silent = max((i for i in raw if len(groups[i]) == 1), default=-1)
    videos, per_split = [], {"train": [], "validation": []}
    for i, members in enumerate(groups):
        name = f"{i + 1:03d}-{FPS}-{RAW_SIZE[0]}x{RAW_SIZE[1]}"
        for j, (subject, side) in enumerate(members):
            per_split[split[subject.name]].append((i, j))
        tasks = set(CHALLENGES)
        if len(members) == 1 and i % 9 == 4:
            tasks.discard("au")
        if len(members) == 1 and i % 11 == 7:
            tasks.discard("va")
        videos.append(
            {
                "video": name,
                "members": members,
                "raw": i in raw,
                "silent": i == silent,
                "tasks": tasks,
                "n_frames": int(rng.integers(min_frames, max_frames + 1)),
            }
        )
    forced = {}
    for sp, slots in per_split.items():
        slots = [slots[k] for k in rng.permutation(len(slots))]
        for c in range(1, len(EXPR_CLASSES)):
            forced.setdefault(slots[(c - 1) % len(slots)], []).append(c)
    for i, v in enumerate(videos):
        v["samples"] = [
            SamplePlan(
                sample_id=v["video"] + (f"_{side}" if side else ""),
                video=v["video"],
                subject=subj,
                side=side,
                split=split[subj.name],
                forced=tuple(forced.get((i, j), ())),
                seed=(seed, i, j),
            )
            for j, (subj, side) in enumerate(v.pop("members"))
        ]
    return videos


def _write_labels(root: Path, p: SamplePlan, labels: dict, tasks: set[str]) -> None:
    lines = {
        "va": ["-5,-5" if (row == -5).all() else f"{row[0]:.3f},{row[1]:.3f}" for row in labels["va"]],
        "expr": [str(int(c)) for c in labels["expr"]],
        "au": [",".join(str(int(v)) for v in row) for row in labels["au"]],
    }
    for task in tasks:
        path = root / "annotations" / CHALLENGES[task] / SPLIT_DIRS[p.split] / f"{p.sample_id}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([",".join(LABELS[task].names), *lines[task]]) + "\n")


def _draw_person(
    frame: np.ndarray, subject: faces.Subject, act: np.ndarray, nz: dict, t: int, centre: tuple[int, int], size: int
) -> None:
    """Put one person (head, shoulders, body) into a raw video frame, in place."""
    face, alpha = faces.render_face(subject, act, size)
    _occlude(face, alpha, nz, t)
    pose = (0.0, 0.0, nz["rot"][t], nz["scale"][t], cv2.BORDER_CONSTANT)
    face, alpha = warp(face, *pose), warp(alpha, *pose)
    # In the frame the head moves more than in the aligned crop, which undoes most of the motion.
    x = int(round(centre[0] - size / 2 + 2.5 * size * nz["dx"][t]))
    y = int(round(centre[1] - size / 2 + 2.5 * size * nz["dy"][t]))
    body = np.array(
        [
            [x + 0.1 * size, y + 0.97 * size],
            [x + 0.9 * size, y + 0.97 * size],
            [x + size, frame.shape[0]],
            [x, frame.shape[0]],
        ],
        np.int32,
    )
    cv2.fillPoly(frame, [body], subject.shirt, cv2.LINE_AA)
    composite(frame, face, alpha, x, y)


def _render_video(root: Path, video: dict) -> list[dict]:
    """Draw one video: its crops, its label files and (if ``raw``) its mp4. Returns sample rows."""
    plans = video["samples"]
    n = video["n_frames"]
    for _ in range(2):  # a two-subject video is as long as its longer side needs
        tls = [timeline(np.random.default_rng([*p.seed, 0]), n, p.forced) for p in plans]
        if len({len(tl["expr"]) for tl in tls}) == 1:
            break
        n = max(len(tl["expr"]) for tl in tls)
    n = len(tls[0]["expr"])
    scene = background(np.random.default_rng([*plans[0].seed, 3]), *RAW_SIZE)
    size = 150 if len(plans) == 1 else 118
    centers = [(160, 122)] if len(plans) == 1 else [(82, 126), (238, 126)]
    states = []
    for p, tl, (cx, cy) in zip(plans, tls, centers):
        nrng = np.random.default_rng([*p.seed, 1])
        # Every raw video (and every third video) loses the face at least once.
        lost_runs = max(min(3, int(nrng.poisson(0.8))), int(video["raw"] or p.seed[1] % 3 == 0))
        nz = nuisance(nrng, n, lost_runs)
        bg = cv2.resize(
            scene[cy - size // 2 : cy + size // 2, cx - size // 2 : cx + size // 2],
            (CROP, CROP),
            interpolation=cv2.INTER_AREA,
        ).astype(np.float32)
        labels = invalidate(np.random.default_rng([*p.seed, 2]), tl)
        _write_labels(root, p, labels, video["tasks"])
        folder = root / "cropped_aligned" / p.sample_id
        folder.mkdir(parents=True)
        states.append((p, tl, nz, bg, folder, (cx, cy), np.random.default_rng([*p.seed, 4]), labels))
    writer = None
    if video["raw"]:
        path = root / "videos" / f"{video['video']}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, RAW_SIZE)
        if not writer.isOpened():
            raise RuntimeError(
                f"{path}: OpenCV cannot write mp4v video; install opencv-python with FFmpeg, or pass --raw-videos 0"
            )
    for t in range(n):
        frame = scene.copy() if writer is not None else None
        for p, tl, nz, bg, folder, (cx, cy), frng, _ in states:
            if nz["lost"][t]:
                continue
            face, alpha = faces.render_face(p.subject, tl["act"][t], CROP, ZOOM)
            _occlude(face, alpha, nz, t, ZOOM)
            crop = _crop_frame(face, alpha, bg, nz, t, frng)
            jpg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, nz["quality"]])[1]
            (folder / f"{t + 1:05d}.jpg").write_bytes(jpg.tobytes())
            if frame is not None:
                _draw_person(frame, p.subject, tl["act"][t], nz, t, (cx, cy), size)
        if writer is not None:
            nz, frng = states[0][2], states[0][6]  # one camera: the first person's light
            writer.write(
                photometric(frame, nz["gain"][t], nz["grad"][t], nz["cast"], nz["blur"][t], nz["noise"][t], frng)
            )
    if writer is not None:
        writer.release()
    if not video["silent"]:
        rngs = [np.random.default_rng([*p.seed, 5]) for p in plans]
        track = voice.soundtrack(rngs, [tl["va"][:, 1] for tl in tls], FPS)
        voice.write_audio(root, video["video"], track, path if writer is not None else None)
    return [
        {
            "sample_id": p.sample_id,
            "video": p.video,
            "subject": p.subject.name,
            "side": p.side,
            "split": p.split,
            "n_frames": n,
            "missing": int(nz["lost"].sum()),
            "raw": video["raw"],
            "tasks": ",".join(sorted(video["tasks"])),
            **{c: int((labels["expr"] == k).sum()) for k, c in enumerate(EXPR_CLASSES)},
        }
        for p, _, nz, *_, labels in states
    ]


def _params(seed, n_clips, min_frames, max_frames, raw_videos) -> dict:
    return {
        "seed": seed,
        "n_clips": n_clips,
        "min_frames": min_frames,
        "max_frames": max_frames,
        "raw_videos": raw_videos,
    }


def read_stamp(out: Path) -> dict | None:
    """The stamp of a complete tree (``version``, ``params``, ``summary``), or None."""
    path = Path(out) / STAMP
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _written_here(out: Path) -> bool:
    """Whether ``out`` is a (possibly older or interrupted) tree of this generator."""
    readme = out / "README.txt"
    return (out / STAMP).is_file() or readme.is_file() and readme.read_text(errors="replace").startswith(README_TITLE)


def generate(
    out: Path,
    seed: int = 0,
    n_clips: int = DEFAULTS["n_clips"],
    min_frames: int = DEFAULTS["min_frames"],
    max_frames: int = DEFAULTS["max_frames"],
    raw_videos: int = DEFAULTS["raw_videos"],
    force: bool = False,
    workers: int = 0,
) -> dict:
    """Write the synthetic dataset to ``out`` unless it already holds this exact tree.

    The tree is built in a sibling ``.<name>.partial`` folder that replaces ``out`` only once
    complete (its stamp written last), so an interrupted run leaves ``out`` as it was.

    Args:
        out: destination folder (created; replaced if it holds another synthetic tree).
        seed: everything is drawn from it: same seed and arguments, same files.
        n_clips: number of videos (at least 3); one or two of them show two subjects.
        min_frames, max_frames: range of frames per video (videos that must hold every class of
            a small split get longer).
        raw_videos: how many videos also get a raw 320x240 mp4 (two-subject ones first).
        force: regenerate even if the stamp matches.
        workers: processes drawing videos in parallel (0: one per CPU).

    Returns:
        a summary: ``out, seed, version, skipped, n_samples, n_frames, n_missing_jpg, seconds,
        samples`` (one dict per sample) and ``expr_counts`` (per split, per class).

    Raises:
        ValueError: arguments out of range.
        DatasetError: ``out`` holds files that this generator did not write.

    Example::

        generate(Path("data/synthetic"), seed=0)["n_samples"]   # 26
    """
    if n_clips < 3 or min_frames < 20 or max_frames < min_frames or raw_videos < 0:
        raise ValueError(
            f"need n_clips >= 3, 20 <= min_frames <= max_frames, raw_videos >= 0; "
            f"got n_clips={n_clips}, min_frames={min_frames}, "
            f"max_frames={max_frames}, raw_videos={raw_videos}"
        )
    out = Path(out)
    params = _params(seed, n_clips, min_frames, max_frames, raw_videos)
    stamp = read_stamp(out)
    if not force and stamp and stamp.get("version") == VERSION and stamp.get("params") == params:
        log.info("%s: already holds the synthetic dataset (seed %d, version %s); nothing to do", out, seed, VERSION)
        return {**stamp["summary"], "skipped": True}
    if out.is_file() or out.is_dir() and any(out.iterdir()) and not _written_here(out):
        raise DatasetError(
            f"{out}: exists, is not empty and was not written by "
            f"data_manifests.synthetic (no {STAMP}); remove it or pass another "
            f"--out"
        )
    start = time.perf_counter()
    tmp = out.parent / f".{out.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    videos = plan(seed, n_clips, min_frames, max_frames, raw_videos)
    workers = min(workers or os.cpu_count() or 1, len(videos))
    if workers > 1:  # videos are independent and seeded apart: same files for any worker count
        with ProcessPoolExecutor(workers) as pool:
            done = list(pool.map(_render_video, [tmp] * len(videos), videos))
    else:
        done = [_render_video(tmp, video) for video in videos]
    table = pd.DataFrame([row for rows in done for row in rows])
    table[["sample_id", "video", "subject", "side", "split"]].to_csv(tmp / "subjects.csv", index=False)
    summary = {
        "out": str(out),
        "seed": seed,
        "version": VERSION,
        "skipped": False,
        "n_samples": len(table),
        "n_frames": int(table["n_frames"].sum()),
        "n_missing_jpg": int(table["missing"].sum()),
        "seconds": round(time.perf_counter() - start, 2),
        "expr_counts": {sp: {c: int(g[c].sum()) for c in EXPR_CLASSES} for sp, g in table.groupby("split")},
        "samples": table.to_dict("records"),
    }
    (tmp / "README.txt").write_text(_readme(summary, params))
    (tmp / STAMP).write_text(json.dumps({"version": VERSION, "params": params, "summary": summary}, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log.info(
        "%s: wrote %d samples, %d frames (%d without a face) in %.1f s",
        out,
        summary["n_samples"],
        summary["n_frames"],
        summary["n_missing_jpg"],
        summary["seconds"],
    )
    return summary


def _readme(summary: dict, params: dict) -> str:
    counts = "\n".join(
        f"  {sp}: " + ", ".join(f"{c} {n}" for c, n in cls.items()) for sp, cls in summary["expr_counts"].items()
    )
    sizes = (
        f"samples: {summary['n_samples']}, frames: {summary['n_frames']}, "
        f"without a face (no jpg): {summary['n_missing_jpg']}"
    )
    return f"""{README_TITLE}, written by data_manifests.synthetic.

generator version: {VERSION}
seed: {params["seed"]}
arguments: {json.dumps(params)}
regenerate: python -m data_manifests.synthetic --out <this folder> --seed {params["seed"]}

{sizes}

Layout as the Aff-Wild2 (ABAW) release: cropped_aligned/<sample>/00001.jpg,
annotations/<challenge>/<Train_Set|Validation_Set>/<sample>.txt, videos/<video>.mp4 (a few).
<video>_left / <video>_right are the two people of one video. subjects.csv maps samples to
subjects; splits are subject-disjoint. Label markers: valence/arousal -5, EXPR -1, AU -1.

EXPR frames per split (valid labels only):
{counts}
"""


def main(argv: list[str] | None = None) -> dict:
    """Command line: ``python -m data_manifests.synthetic --out DIR --seed N``."""
    parser = argparse.ArgumentParser(
        prog="python -m data_manifests.synthetic",
        description="Write the synthetic dataset (Aff-Wild2 layout) from a seed; does nothing if "
        "DIR already holds the same tree (same seed, arguments and version).",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="destination folder (e.g. data/synthetic)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--clips", type=int, default=DEFAULTS["n_clips"], help="number of videos (default %(default)s)")
    parser.add_argument(
        "--min-frames",
        type=int,
        default=DEFAULTS["min_frames"],
        help="frames per video, at least (default %(default)s)",
    )
    parser.add_argument(
        "--max-frames", type=int, default=DEFAULTS["max_frames"], help="frames per video, at most (default %(default)s)"
    )
    parser.add_argument(
        "--raw-videos",
        type=int,
        default=DEFAULTS["raw_videos"],
        help="videos that also get a raw mp4 (default %(default)s)",
    )
    parser.add_argument("--force", action="store_true", help="regenerate even if complete")
    parser.add_argument("--workers", type=int, default=0, help="processes (default: one per CPU)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return generate(
            args.out, args.seed, args.clips, args.min_frames, args.max_frames, args.raw_videos, args.force, args.workers
        )
    except (ValueError, RuntimeError) as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
