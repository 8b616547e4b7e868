"""``ENGINE=ray``: stage one on a Ray cluster, with Ray Data for the batch inference.

The jobs of a run (``extract.plan``: the videos or frame folders not yet cached) are the rows of a
Ray Dataset. :class:`Decoder` actors (BlazeFace loaded once per actor) decode, detect and crop,
yielding a batch per chunk of frames (``extract.worker.job_rows``, the local workers' own code);
:class:`Embedder` actors (the backbone loaded once, ``num_gpus=1`` each where the cluster has GPUs)
embed fixed-size batches of uint8 crops; the driver writes what comes back with the cache's shard
writer (``extract.ray_sink.ShardSink``) and ``extract.pipeline`` merges the shards as for the local
engine. So the cache keeps every property: videos already complete are not sent again, a stopped run
loses only the videos in flight, and one file never mixes two settings. With ``AUDIO=``, a decoder
also extracts each video's audio in the same decode pass (``extract.audio_pass``) into shards on its
own node, and sends each finished shard back with the video's end row for the driver to publish.

``RAY_ADDRESS`` picks the cluster (without it Ray starts one on this machine). Every node needs the
tool at the same path as the driver (a shared filesystem) or installed, and so do the videos.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.registry import ConfigError
from extract.cache import shard_bytes
from extract.ray_sink import END, FAILED, FRAME
from extract.worker import FaceSettings, Job, JobDone, JobStats, job_rows, make_detector

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
INSTALL = "install it with `.venv/bin/pip install -r requirements-ray.txt` (make setup-ray)"


class ClusterError(ValueError):
    """The cluster stopped the run; the finished videos are kept."""


def require_ray():
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"ENGINE=ray needs Ray ({err}); {INSTALL}, or use ENGINE=local") from None
    return ray


def connect():
    """Joins the cluster at ``RAY_ADDRESS`` or starts a local one; the actors get this checkout on
    their path, the Keras backend of the driver, and JAX that does not take a shared GPU whole."""
    ray = require_ray()
    address = os.environ.pop("RAY_ADDRESS", "") or None  # an empty RAY_ADDRESS (make's default): local
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
        "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "GLOG_minloglevel": "2",
    }
    if not ray.is_initialized():
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionError as err:
            raise ClusterError(
                f"cannot join the Ray cluster at RAY_ADDRESS={address} ({err}); check the address and that "
                "`ray status` works there, or unset RAY_ADDRESS to start a local cluster"
            ) from None
    if address:
        os.environ["RAY_ADDRESS"] = address
    return ray


@dataclass(frozen=True)
class Layout:
    """How many actors of each kind run where: decided from the cluster's resources."""

    nodes: int
    cpus: float
    gpus: float
    decoders: int
    decoder_cpus: float
    embedders: int
    embedder_cpus: float
    embedder_gpus: float

    @classmethod
    def for_cluster(cls, cpus: float, gpus: float, nodes: int, decoders: int = 0) -> "Layout":
        """One embedder per GPU, with a CPU of its own, and a decoder per CPU left. On a cluster
        without GPUs one embedder shares the CPUs with the decoders (``num_cpus=0``), as the local
        engine's inference loop shares the cores with its workers.

        >>> Layout.for_cluster(2, 0, 2).decoders, Layout.for_cluster(16, 1, 1).decoders
        (2, 15)
        >>> Layout.for_cluster(16, 1, 1).embedder_cpus, Layout.for_cluster(2, 0, 1).embedder_cpus
        (1.0, 0.0)
        """
        embedders = int(gpus) or 1
        embedder_cpus = 1.0 if gpus >= 1 and cpus - embedders >= 1 else 0.0
        left = cpus - embedders * embedder_cpus
        decoders = decoders or max(1, int(left))
        decoder_cpus = max(0.01, min(1.0, left / decoders))
        return cls(nodes, cpus, gpus, decoders, decoder_cpus, embedders, embedder_cpus, 1.0 if gpus >= 1 else 0.0)


def _ends(job: Job, message) -> dict:
    detail = json.dumps(asdict(message)) if isinstance(message, JobDone) else message.reason
    kind = END if isinstance(message, JobDone) else FAILED
    return {"kind": kind, "detail": detail}


def _batch(job_id: int, sample_ids, seq, kind: int, detail: str, rows=None, input_size=(1, 1, 1), audio=b"") -> dict:
    """A batch of the stream's columns (``extract.ray_sink``): one chunk of frames, or one end row
    (``audio``: the pickled ``{sample_id: shard file}`` of the audio its decode pass wrote)."""
    n = len(seq)
    crops = np.zeros((n, *input_size), np.uint8)
    if rows is not None and rows.face_mask.any():
        crops[rows.face_mask] = rows.crops
    return {
        "job_id": np.full(n, job_id, np.int64),
        "sample_id": np.asarray(sample_ids, dtype=object),
        "seq": np.asarray(seq, np.int64),
        "kind": np.full(n, kind, np.int8),
        "detail": np.asarray([detail] * n, dtype=object),
        "frame_index": rows.frame_index if rows is not None else np.full(n, -1, np.int32),
        "face_mask": rows.face_mask if rows is not None else np.zeros(n, np.bool_),
        "bbox": rows.bbox if rows is not None else np.zeros((n, 4), np.float32),
        "score": rows.score if rows is not None else np.zeros(n, np.float32),
        "crop": crops,
        "audio": np.asarray([audio] * n, dtype=object),
    }


class Decoder:
    """A Ray actor: jobs in, a batch of rows per chunk of frames out (crops at the backbone's size)."""

    def __init__(self, settings: FaceSettings, video: bool, audio: str = ""):
        from extract import worker_env  # noqa: F401  (as in a local worker: no TensorFlow, one thread)

        self.settings = settings
        # Loaded before the first job, as a local worker warms it up: the actor is ready only then.
        self.detector = make_detector(settings) if video else None
        if audio:
            from extract.audio import warm_up

            warm_up(audio)

    def __call__(self, batch: dict):
        for blob in batch["job"]:
            yield from self.run(pickle.loads(blob))

    def run(self, job: Job):
        if job.audio is None:
            yield from self._run(job)
            return
        with tempfile.TemporaryDirectory(prefix="audio-") as local:  # this node's: the driver's may be out of reach
            yield from self._run(dataclasses.replace(job, audio=dataclasses.replace(job.audio, parts=local)))

    def _run(self, job: Job):
        from extract.sources import SourceError

        stats, seq = JobStats(), {}
        size = self.settings.input_size
        audio = b""
        try:
            if job.mode == "video" and self.detector is None:
                self.detector = make_detector(self.settings)
            for rows in job_rows(job, self.settings, self.detector, stats):
                start = seq.get(rows.sample_id, 0)
                seq[rows.sample_id] = start + len(rows.frame_index)
                n = len(rows.frame_index)
                yield _batch(job.job_id, [rows.sample_id] * n, np.arange(start, start + n), FRAME, "", rows, size)
            message = stats.message(job)
            if job.audio is not None and stats.audio is not None and "error" not in stats.audio:
                audio = pickle.dumps({s: shard_bytes(job.audio.parts, s) for s in job.audio.subjects})
        except SourceError as err:
            message = _failed(job, str(err))
        except Exception as err:  # one bad file never stops the others: its reason goes in the summary
            message = _failed(job, f"{job.path}: {type(err).__name__}: {err}")
        yield _batch(job.job_id, [""], [0], input_size=size, audio=audio, **_ends(job, message))


def _failed(job: Job, reason: str):
    from extract.worker import JobFailed

    return JobFailed(job.job_id, reason)


class Embedder:
    """A Ray actor: the backbone, loaded once; a batch of rows in, their embeddings out (zeros where
    no face), the crops dropped."""

    def __init__(self, backbone: str, weights: str, embedding_layer: str, precision: str, batch: int, **where):
        from extract.litert import load_inference_backbone

        # where: the runtime the driver resolved (the cache's metadata says it) and the models folder.
        self.backbone = load_inference_backbone(backbone, weights, embedding_layer, precision, **where)
        self.backbone.batch_size = batch

    def __call__(self, batch: dict) -> dict:
        crops = batch.pop("crop")
        mask = np.asarray(batch["face_mask"], bool)
        emb = np.zeros((len(mask), self.backbone.embedding_dim), np.float16)
        if mask.any():
            emb[mask] = self.backbone.embed(np.ascontiguousarray(crops[mask]))
        batch["embedding"] = emb
        return batch


def layout(ray, workers: int = 0) -> Layout:
    res = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return Layout.for_cluster(float(res.get("CPU", 1)), float(res.get("GPU", 0)), nodes, workers)


def stream(ray, cfg, jobs: list[Job], settings: FaceSettings, plan: Layout):
    """The run's Ray Dataset, built lazily: iterating it runs the cluster."""
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = False  # no actor waits on another; the sink restores order
    ctx.enable_progress_bars = False  # the driver's own bar counts frames
    items = [{"job": pickle.dumps(job)} for job in jobs]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        Decoder,
        fn_constructor_kwargs={
            "settings": settings,
            "video": any(job.mode == "video" for job in jobs),
            "audio": next((job.audio.name for job in jobs if job.audio is not None), ""),
        },
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=plan.decoders),
        num_cpus=plan.decoder_cpus,
        batch_format="numpy",
    )
    return ds.map_batches(
        Embedder,
        fn_constructor_kwargs={
            "backbone": cfg.backbone,
            "weights": str(Path(cfg.weights).resolve()) if cfg.weights else "",
            "embedding_layer": cfg.embedding_layer,
            "precision": cfg.precision,
            "batch": cfg.batch,
            "runtime": cfg.runtime,  # the one the driver's backbone runs on (extract.pipeline)
            "models_dir": cfg.models_dir,
        },
        batch_size=cfg.batch,
        compute=ray.data.ActorPoolStrategy(size=plan.embedders),
        num_cpus=plan.embedder_cpus,
        num_gpus=plan.embedder_gpus or None,
        batch_format="numpy",
    )


def run_on_ray(cfg, jobs: list[Job], settings: FaceSettings, meta, parts, summary: dict, audio=None) -> None:
    """Extracts ``jobs`` on the cluster into shards under ``parts``, updating ``summary`` in place;
    ``audio``: the run's ``extract.audio_run.AudioRun``, which the jobs' audio shards go to.

    A stop of the cluster (a node lost for good, the driver interrupted) aborts the videos in flight
    only and says to run again; a job that fails on its own input is listed, as on the local engine.
    """
    from tqdm import tqdm

    from extract.job_loop import estimate_frames
    from extract.ray_sink import ShardSink

    ray = connect()
    # One block per full inference batch, not per 64 frames: a quarter of the objects through the store.
    settings = dataclasses.replace(settings, chunk=max(settings.chunk, cfg.batch))
    try:
        plan = layout(ray, cfg.workers)
        estimate = {job.job_id: estimate_frames(job) for job in jobs}
        jobs = sorted(jobs, key=lambda job: estimate[job.job_id], reverse=True)  # longest first
        summary.update(engine="ray", cluster=asdict(plan))
        log.info(
            "Ray cluster: %d nodes, %g CPUs, %g GPUs: %d decoders, %d embedders",
            plan.nodes,
            plan.cpus,
            plan.gpus,
            plan.decoders,
            plan.embedders,
        )
        bar = tqdm(total=sum(estimate.values()), unit="frame", desc=f"extract {cfg.dataset}/{cfg.backbone} (ray)")
        sink = ShardSink(jobs, meta, parts, summary, bar, audio)
        started = time.perf_counter()
        try:
            for batch in stream(ray, cfg, jobs, settings, plan).iter_batches(batch_size=None, batch_format="numpy"):
                sink.add(batch)
        except ray.exceptions.RayError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ClusterError(
                f"the Ray cluster stopped the run ({type(err).__name__}: {first}); the {summary['done']} videos "
                "finished are kept in the cache's shards: run the same command again to extract the rest"
            ) from None
        finally:
            bar.close()
            sink.abort()
        for job_id in sink.open_jobs:
            sink.fail(job_id, f"{sink.by_id[job_id].path}: the cluster sent back no end for this video")
        summary["work_seconds"] = sink.work_seconds()
        summary["loop_seconds"] = round(time.perf_counter() - started, 3)
    finally:
        ray.shutdown()
