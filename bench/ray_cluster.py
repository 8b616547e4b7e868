"""``ENGINE=ray`` against the local engine on this machine, and one Ray node against two.

Three runs of ``make extract``'s default settings (keyframes every 10 frames) over the same tree of
real videos (``cfg.videos`` copies of ``long_factor`` clips back to back), each into its own cache:
the local engine; Ray on one node (``ray.init`` starts it, every core); Ray on two nodes of a
cluster started here with ``ray start`` (half the cores each, on this same machine: what the second
node costs in transport, not what a second machine adds). The rate that counts is frames over the
work (first frame decoded to last row written); the start-up before it, which a long run amortises
(Ray's own, the actors' imports), is reported apart.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from bench.common import BenchConfig, affwild2_tree, repeat_clip
from bench.end_to_end import _rates, extract_in_child

log = logging.getLogger(__name__)

RAY = str(Path(sys.executable).with_name("ray"))
# Token authentication is for clusters other machines reach; this one listens on this machine only.
LOCAL_ONLY = {"RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def two_nodes(cpus_each: int):
    """A head and a second node on this machine; yields the address; stops both."""
    env = {**os.environ, **LOCAL_ONLY}
    port = _free_port()
    common = [f"--num-cpus={cpus_each}", "--object-store-memory=500000000", "--disable-usage-stats"]
    head = [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *common]
    subprocess.run(head, env=env, check=True, capture_output=True)
    try:
        join = [RAY, "start", f"--address=127.0.0.1:{port}", *common]
        subprocess.run(join, env=env, check=True, capture_output=True)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)


@contextmanager
def _env(**values):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ray_rates(cfg: BenchConfig, workdir: Path, clip: Path) -> dict:
    """Frames/s of the local engine, Ray on one node and Ray on two, and the ratios."""
    try:
        import ray  # noqa: F401
    except ImportError:
        log.warning("ray stage skipped: Ray is not installed (pip install -r requirements-ray.txt)")
        return {}
    long = repeat_clip(clip, workdir / "ray" / "long.mp4", times=1 if cfg.quick else cfg.long_factor)
    root = affwild2_tree(workdir / "ray" / "data", long, [f"clip{i:03d}" for i in range(cfg.videos)])
    base = dict(
        dataset="affwild2",
        data_root=str(root),
        input="video",
        backbone=cfg.backbone,
        weights=cfg.weights,
        precision=cfg.precision,
        batch=cfg.batch,
    )
    with _env(**LOCAL_ONLY, RAY_ADDRESS=""):
        local, one = extract_in_child(
            [
                {**base, "cache_dir": str(workdir / "ray" / "local"), "workers": cfg.workers},
                {**base, "cache_dir": str(workdir / "ray" / "one"), "engine": "ray"},
            ]
        )
    cores = os.cpu_count() or 2
    with two_nodes(max(1, cores // 2)) as address, _env(**LOCAL_ONLY, RAY_ADDRESS=address):
        (two,) = extract_in_child([{**base, "cache_dir": str(workdir / "ray" / "two"), "engine": "ray"}])
    figures = {"ray_frames": local["frames"]}
    for key, run in (("local", local), ("ray_one_node", one), ("ray_two_nodes", two)):
        steady, total = _rates(run)
        figures[f"engine_{key}_fps"] = steady
        figures[f"engine_{key}_fps_total"] = total
        figures[f"engine_{key}_startup_s"] = round(run["seconds"] - (run["work_seconds"] or run["loop_seconds"]), 2)
    figures["ray_vs_local"] = round(figures["engine_ray_one_node_fps"] / figures["engine_local_fps"], 3)
    figures["ray_two_vs_one_node"] = round(figures["engine_ray_two_nodes_fps"] / figures["engine_ray_one_node_fps"], 3)
    log.info(
        "ray: %d frames: local %.1f, ray one node %.1f, two nodes %.1f frames/s",
        local["frames"],
        figures["engine_local_fps"],
        figures["engine_ray_one_node_fps"],
        figures["engine_ray_two_nodes_fps"],
    )
    return figures
