"""The benchmark's settings, the machine it runs on, peak-memory probes and the media it builds.

>>> cfg = BenchConfig(quick=True).resolved()
>>> cfg.workers, cfg.videos
(1, 1)

The media it builds (``make bench`` writes them under its work folder)::

    base = cut_clip(cfg.clip, Path("bench-work/base.mp4"), frames=cfg.clip_frames)
    long = repeat_clip(base, Path("bench-work/long.mp4"), times=10)
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import re
import resource
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2

DEFAULT_CLIP = "tests/media/WolfgangLanger_Pexels.mp4"
VA_HEADER = "valence,arousal"
# --quick: seconds on 2 cores; the figures only have to exist.
_QUICK = dict(
    clip=str(Path(DEFAULT_CLIP).with_name("single_face.mp4")),
    clip_frames=12,
    workers=1,
    videos=1,
    naive_frames=8,
    min_seconds=0.05,
    batch=16,
    synthetic_clips=3,
    train_layers=1,
    train_units=8,
    train_seq_len=8,
    train_batch_size=8,
    train_videos=2,
    train_frames=64,
    train_epochs=2,
    train_rounds=1,
)


@dataclass(frozen=True)
class BenchConfig:
    """Every setting of one benchmark run (the CLI flags mirror the field names).

    Args:
        machine: name of the JSON file and of the machine in the table; empty: derived
            (``cpu-<cores>core`` or ``<gpu name>-<cores>core``).
        quick: tiny inputs (seconds), for the test; figures are not meaningful.
        backbone, weights, precision, batch: as for ``python -m extract``.
        input_size: ``H,W,C`` for the ``keras.applications`` backbones (a distillation student's
            size, say); empty: the registry's.
        workers: decode/detect processes; 0: one per core.
        detector: BlazeFace model of the end-to-end run and of ``decode_detect_fps``.
        detect_every: the ``keyframes`` stage's keyframe interval (``extract --detect-every``).
        clip: the real video every stage reads. clip_frames: use only its first frames (0: all).
        videos: copies of the clip in the end-to-end dataset; 0: two per worker.
        long_factor: the memory check's long video is this many clips back to back.
        naive_frames: frames the naive baseline processes (it holds them all in a list).
        min_seconds: each rate is measured over at least this long.
        synthetic_clips: clips of the synthetic dataset of the frames-mode run.
        train_*: stage two's model and data (``python -m train.bench`` flags); train_dim 0: the
            backbone's embedding size.
        workdir: where the trees, videos and caches go; empty: a temporary folder, removed after.
    """

    machine: str = ""
    quick: bool = False
    backbone: str = "fer"
    weights: str = ""
    precision: str = "auto"
    input_size: str = ""
    batch: int = 256
    workers: int = 0
    detector: str = "full+short"
    detect_every: int = 10
    clip: str = DEFAULT_CLIP
    clip_frames: int = 0
    videos: int = 0
    long_factor: int = 10
    naive_frames: int = 300
    min_seconds: float = 2.0
    synthetic_clips: int = 6
    train_model: str = "gru"
    train_layers: int = 2
    train_units: int = 256
    train_seq_len: int = 64
    train_batch_size: int = 64
    train_videos: int = 8
    train_frames: int = 8192
    train_epochs: int = 3
    train_rounds: int = 3
    train_dim: int = 0
    seed: int = 0
    workdir: str = ""

    def resolved(self) -> "BenchConfig":
        """Quick-mode sizes (where not set explicitly) and the derived defaults filled in."""
        cfg = self
        if cfg.quick:  # tiny sizes, except where a flag set another value
            defaults = {f.name: f.default for f in dataclasses.fields(BenchConfig)}
            small = {k: v for k, v in _QUICK.items() if getattr(cfg, k) == defaults[k]}
            cfg = dataclasses.replace(cfg, **small)
        workers = cfg.workers or os.cpu_count() or 1
        return dataclasses.replace(cfg, workers=workers, videos=cfg.videos or 2 * workers)

    def crop_size(self) -> tuple | None:
        """``input_size`` as a tuple, None when empty."""
        if not self.input_size:
            return None
        try:
            size = tuple(int(v) for v in self.input_size.split(","))
        except ValueError:
            size = ()
        if len(size) != 3 or min(size) < 1:
            raise ValueError(f"--input-size: expected H,W,C such as 64,64,3; got {self.input_size!r}")
        return size

    def validate(self) -> "BenchConfig":
        self.crop_size()
        if not Path(self.clip).is_file():
            raise ValueError(
                f"{self.clip}: no such video; run `make media` to fetch the test media, or pass --clip <video>"
            )
        for name in (
            "batch",
            "detect_every",
            "long_factor",
            "naive_frames",
            "train_epochs",
            "train_rounds",
            "synthetic_clips",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(self, name)}")
        if self.train_epochs < 2:
            raise ValueError("--train-epochs must be >= 2: the first epoch pays compilation and is not timed")
        if self.synthetic_clips < 3:
            raise ValueError("--synthetic-clips must be >= 3 (the synthetic generator's minimum)")
        return self


def machine_info(cfg: BenchConfig) -> dict:
    """Who measured: cores, CPU model, accelerator, backend, versions, load, date."""
    import keras

    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = found.group(1).strip() if found else cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    gpus = _gpu_names()
    if cfg.machine:
        machine = cfg.machine
    elif gpus:
        machine = re.sub(r"[^a-z0-9]+", "-", gpus[0].lower()).strip("-") + f"-{cores}core"
    else:
        machine = f"cpu-{cores}core"
    return {
        "machine": machine,
        "backend": keras.backend.backend(),
        "accelerator": "gpu" if gpus else "cpu",
        "gpu": ", ".join(gpus),
        "cores": cores,
        "cpu_model": cpu,
        "python": platform.python_version(),
        "keras_version": keras.__version__,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_avg_start": round(os.getloadavg()[0], 2),
        "quick": cfg.quick,
    }


def _gpu_names() -> list[str]:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return [d.device_kind for d in jax.devices() if d.platform == "gpu"]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    return []


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory in MiB of this process (``RUSAGE_SELF``) or of its largest reaped child."""
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux reports KiB


def _status_mb(pid: int, field: str) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    found = re.search(rf"^{field}:\s*(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) / 1024.0 if found else 0.0


def vm_hwm_mb(pid: int) -> float:
    """A live process's peak resident memory (``VmHWM``) in MiB; 0 once it is gone."""
    return _status_mb(pid, "VmHWM")


def vm_rss_mb(pid: int) -> float:
    """A live process's resident memory now (``VmRSS``) in MiB; 0 once it is gone."""
    return _status_mb(pid, "VmRSS")


def child_pids(parent: int) -> list[int]:
    """Pids whose parent is ``parent``, read from ``/proc/<pid>/stat`` (no psutil needed)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if int(fields[1]) == parent:
            pids.append(int(stat.parent.name))
    return pids


def _writer(path: Path, like: cv2.VideoCapture) -> cv2.VideoWriter:
    fps = like.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(like.get(cv2.CAP_PROP_FRAME_WIDTH)), int(like.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write mp4v video here; check the folder is writable")
    return writer


def repeat_clip(src: str | Path, dst: Path, times: int = 1, frames: int = 0) -> Path:
    """Writes ``times`` copies of ``src`` (its first ``frames``, 0: all) back to back as an mp4v video.

    The source is decoded again for every copy, so no more than one frame is ever held.
    """
    written = 0
    capture = cv2.VideoCapture(str(src))
    writer = _writer(dst, capture)
    try:
        for _ in range(times):
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            n = 0
            while not frames or n < frames:
                ok, bgr = capture.read()
                if not ok:
                    break
                writer.write(bgr)
                n += 1
            written += n
    finally:
        writer.release()
        capture.release()
    if not written:
        raise RuntimeError(f"{src}: no frame decoded; check the video with ffprobe")
    return dst


def cut_clip(src: str | Path, dst: Path, frames: int) -> Path:
    """``src`` itself when ``frames`` is 0, else its first ``frames`` frames re-encoded at ``dst``."""
    return Path(src) if not frames else repeat_clip(src, dst, times=1, frames=frames)


def affwild2_tree(root: Path, clip: Path, names: list[str]) -> Path:
    """An Aff-Wild2-layout tree whose ``videos/`` holds one copy of ``clip`` per name.

    Each video gets a one-line VA label file: the loader needs a label to list a sample, and
    stage one reads no label.
    """
    videos = root / "videos"
    labels = root / "annotations" / "VA_Estimation_Challenge" / "Train_Set"
    videos.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(clip, videos / f"{name}{clip.suffix}")
        (labels / f"{name}.txt").write_text(f"{VA_HEADER}\n0.1,0.2\n")
    return root
