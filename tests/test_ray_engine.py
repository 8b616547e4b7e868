"""ENGINE=ray on a real two-node Ray cluster this module starts on this machine (``ray start --head``
and a second node joined to it, one CPU each): the same cache as the local engine, real media with
broken files, and a node killed mid-run."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data_manifests.synthetic import generate
from extract.cache import CacheReader, cache_path, finished_shards, parts_dir_for, summary_path
from extract.pipeline import ExtractConfig, run_extract

pytest.importorskip("ray", reason="ENGINE=ray needs requirements-ray.txt (make test installs it)")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MEDIA = Path(__file__).parent / "media"
RAY = str(Path(sys.executable).with_name("ray"))
NODE = ["--num-cpus=1", "--object-store-memory=200000000", "--disable-usage-stats"]


def _env(**extra) -> dict:
    # Token authentication is for clusters other machines reach; this one listens on this machine only.
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO), **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(address: str) -> subprocess.Popen:
    """A second node, in its own process group so that a test can kill all of it at once."""
    return subprocess.Popen(
        [RAY, "start", f"--address={address}", "--block", *NODE],
        env=_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_nodes(address: str, n: int) -> None:
    probe = f"import ray; ray.init(address='{address}'); print(sum(x['Alive'] for x in ray.nodes()))"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = subprocess.run([sys.executable, "-c", probe], env=_env(), capture_output=True, text=True)
        if out.stdout.strip() == str(n):
            return
        time.sleep(1)
    raise AssertionError(f"the Ray cluster at {address} did not reach {n} nodes")


@pytest.fixture(scope="module")
def cluster():
    port = _free_port()
    address = f"127.0.0.1:{port}"
    subprocess.run(
        [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *NODE],
        env=_env(),
        check=True,
        capture_output=True,
    )
    nodes = {"second": _join(address)}
    try:
        _wait_nodes(address, 2)
        yield address, nodes
    finally:
        for proc in nodes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run([RAY, "stop", "--force"], env=_env(), capture_output=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    generate(root, seed=3, n_clips=10, min_frames=60, max_frames=90, raw_videos=0)
    cache = tmp_path_factory.mktemp("local")
    run_extract(ExtractConfig(dataset="synthetic", data_root=str(root), cache_dir=str(cache), workers=1, batch=64))
    return root, cache_path(cache, "synthetic", "fer")


def _extract(address: str, *args: str) -> tuple[list[str], dict]:
    cmd = [sys.executable, "-m", "extract", "--engine", "ray", "--batch", "16", *args]
    return cmd, _env(RAY_ADDRESS=address)


def _assert_same_cache(got_path: Path, want_path: Path) -> None:
    got, want = CacheReader(got_path), CacheReader(want_path)
    assert got.video_ids() == want.video_ids()
    for vid in want.video_ids():
        a, b = got.read(vid), want.read(vid)
        np.testing.assert_array_equal(a.frame_index, b.frame_index)  # each frame once, in order
        np.testing.assert_array_equal(a.face_mask, b.face_mask)
        np.testing.assert_array_equal(a.bbox, b.bbox)
        np.testing.assert_allclose(a.embeddings.astype(np.float32), b.embeddings.astype(np.float32), atol=2e-3)
    assert got.meta == want.meta


def test_two_nodes_give_the_local_engines_cache(cluster, clips, tmp_path):
    address, _ = cluster
    root, reference = clips
    cmd, env = _extract(address, "--dataset", "synthetic", "--data-root", str(root), "--cache-dir", str(tmp_path))
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = cache_path(tmp_path, "synthetic", "fer")
    _assert_same_cache(got, reference)
    summary = json.loads(summary_path(got).read_text())
    assert summary["engine"] == "ray" and summary["cluster"]["nodes"] == 2
    assert summary["frames"] == sum(len(CacheReader(got).read(v)) for v in CacheReader(got).video_ids())
    # Complete: a second run sends nothing to the cluster.
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 videos done, 11 already cached" in again.stdout


def test_real_media_with_broken_files_on_the_cluster(cluster, tmp_path):
    address, _ = cluster
    from tests.test_extract import _real_media_tree

    root = _real_media_tree(tmp_path / "data")
    args = ["--dataset", "affwild2", "--data-root", str(root), "--cache-dir", str(tmp_path / "c"), "--input", "video"]
    cmd, env = _extract(address, *args)
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr[-2000:]  # two files failed, and the exit code says so
    failed = [line for line in out.stderr.splitlines() if line.startswith("failed: ")]
    assert sorted(Path(line.split(": ")[1]).name for line in failed) == ["not_a_video.mp4", "truncated.mp4"]
    reader = CacheReader(cache_path(tmp_path / "c", "affwild2", "fer"))
    assert reader.video_ids() == ["no_face", "single_face"]
    assert len(reader.read("single_face")) == 72 and len(reader.read("no_face")) == 95
    assert reader.read("single_face").face_mask.mean() >= 0.95


def test_the_actors_decode_each_videos_audio_in_its_faces_pass(cluster, tmp_path):
    # AUDIO= with ENGINE=ray: each video's audio comes back from the actor that decoded it for its
    # faces, as shard files, and gives the rows the audio alone gives, frame for frame.
    address, _ = cluster
    from tests.test_extract import _real_media_tree

    root = _real_media_tree(tmp_path / "data")
    common = ["--dataset", "affwild2", "--data-root", str(root), "--audio", "logmel"]
    cmd, env = _extract(address, *common, "--cache-dir", str(tmp_path / "both"), "--input", "video")
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr[-2000:]  # the two broken files fail, for both caches
    failed = [Path(line.split(": ")[1]).name for line in out.stderr.splitlines() if line.startswith("failed: ")]
    assert sorted(failed) == ["not_a_video.mp4"] * 2 + ["truncated.mp4"] * 2
    ours = CacheReader(cache_path(tmp_path / "both", "affwild2", "audio-logmel"))
    summary = json.loads(summary_path(ours.path).read_text())
    assert summary["decoded_with_video"] == summary["done"] == 2 and summary["failed"]
    alone = subprocess.run(
        [sys.executable, "-m", "extract", *common, "--backbone", "none", "--cache-dir", str(tmp_path / "alone")],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert alone.returncode == 1, alone.stderr[-2000:]
    theirs = CacheReader(cache_path(tmp_path / "alone", "affwild2", "audio-logmel"))
    faces = CacheReader(cache_path(tmp_path / "both", "affwild2", "fer"))
    assert ours.video_ids() == theirs.video_ids() == faces.video_ids() == ["no_face", "single_face"]
    for vid in ours.video_ids():
        a, b = ours.read(vid), theirs.read(vid)
        assert a.face_mask.mean() > 0.9  # both clips have sound from start to end
        for field in ("embeddings", "frame_index", "face_mask", "score"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=f"{vid} {field}")
        np.testing.assert_array_equal(faces.read(vid).frame_index, a.frame_index)
    assert list(parts_dir_for(ours.path).glob("*")) == []  # every shard published whole, then merged


def test_a_node_killed_mid_run_loses_nothing(cluster, clips, tmp_path):
    address, nodes = cluster
    root, reference = clips
    cache = tmp_path / "cache"
    parts = parts_dir_for(cache_path(cache, "synthetic", "fer"))
    cmd, env = _extract(address, "--dataset", "synthetic", "--data-root", str(root), "--cache-dir", str(cache))
    log = open(tmp_path / "run.log", "w")
    run = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not finished_shards(parts) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.poll() is None, "the run ended before a video was finished: nothing was interrupted"
    os.killpg(nodes["second"].pid, signal.SIGKILL)  # the node's raylet, object store and actors
    nodes["second"].wait()
    nodes["second"] = _join(address)  # a replacement joins, as an autoscaler would start one
    try:
        first = run.wait(timeout=300)
    except subprocess.TimeoutExpired:
        run.kill()
        first = run.wait()
    assert first in (0, 2, -9), (tmp_path / "run.log").read_text()[-2000:]  # healed, or stopped saying so
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert list(parts.glob("*")) == []
    _assert_same_cache(cache_path(cache, "synthetic", "fer"), reference)
