"""Start-up: `python -m extract` on a complete cache returns without the backend, the backbone or the
workers, yet a changed setting is still refused; the workers start decoding before the backbone has
loaded, and the summary says when the first frame was decoded. Real videos, real caches."""

import json
import os
import subprocess
import sys
import time

import pytest

from data_manifests.synthetic import generate
from extract.cache import CacheReader, cache_path, summary_path

pytestmark = pytest.mark.slow  # extracts for seconds: `-m 'not slow'` skips it

# Runs extract's main in a fresh interpreter and says whether the backend was ever imported.
PROBE = (
    "import json, sys; from extract.__main__ import main; code = main(sys.argv[1:]); "
    "print(json.dumps({'code': code, 'tensorflow': 'tensorflow' in sys.modules, 'keras': 'keras' in sys.modules}))"
)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    root = tmp_path_factory.mktemp("startup")
    generate(root / "data", seed=4, n_clips=3, min_frames=20, max_frames=26, raw_videos=3)
    args = ["--dataset", "synthetic", "--data-root", str(root / "data"), "--cache-dir", str(root / "cache")]
    args += ["--input", "video", "--workers", "2"]
    started = time.perf_counter()
    first = subprocess.run([sys.executable, "-m", "extract", *args], capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - started
    assert first.returncode == 0, first.stderr
    # The run ends in os._exit: every queue's semaphores must be released before (extract.pool).
    assert "resource_tracker" not in first.stderr
    return root, args, wall


def _probe(args):
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300)
    return json.loads(done.stdout.strip().splitlines()[-1]), done


def test_a_complete_cache_returns_without_the_backend(extracted):
    root, args, _ = extracted
    cache = cache_path(root / "cache", "synthetic", "fer")
    before = (cache.stat().st_mtime_ns, summary_path(cache).read_text())
    result, done = _probe(args)
    assert result == {"code": 0, "tensorflow": False, "keras": False}
    assert (
        "nothing to extract" in done.stderr and "0 videos done, 4 already cached" in done.stdout
    )  # 3 clips, one with two subjects
    assert (cache.stat().st_mtime_ns, summary_path(cache).read_text()) == before  # nothing written


def _with_cache_dir(args: list[str], cache_dir) -> list[str]:
    at = args.index("--cache-dir")
    return [*args[:at], "--cache-dir", str(cache_dir), *args[at + 2 :]]


def test_a_fresh_extraction_runs_without_tensorflow(extracted, tmp_path):
    root, args, _ = extracted  # the first extraction exported the backbone's LiteRT copy (extract.litert)
    fresh = _with_cache_dir(args, tmp_path)
    result, done = _probe(fresh)
    assert result == {"code": 0, "tensorflow": False, "keras": False}, done.stderr
    assert CacheReader(cache_path(tmp_path, "synthetic", "fer")).meta.backend == "litert"


def test_a_run_stopped_by_a_setting_error_says_one_line_and_leaks_nothing(extracted, tmp_path):
    root, args, _ = extracted
    fresh = _with_cache_dir(args, tmp_path)
    env = {**os.environ, "KERAS_BACKEND": "jax"}  # LiteRT copies are exported with TensorFlow only
    cmd = [sys.executable, "-m", "extract", *fresh, "--runtime", "litert"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: --runtime litert is exported with the TensorFlow backend, not KERAS_BACKEND=jax; "
        "or pass --runtime keras"
    ]
    assert "Traceback" not in done.stderr and "resource_tracker" not in done.stderr


def test_a_changed_setting_on_a_complete_cache_is_still_refused(extracted):
    root, args, _ = extracted
    result, done = _probe([*args, "--margin", "0.4"])
    assert result["code"] == 2 and "was written with other settings" in done.stderr and "margin=0.4" in done.stderr
    result, done = _probe([*args, "--detect-every", "1"])
    assert result["code"] == 2 and "detect_every=10" in done.stderr


def test_the_summary_times_the_first_frame_and_the_work(extracted):
    root, _, wall = extracted
    summary = json.loads(summary_path(cache_path(root / "cache", "synthetic", "fer")).read_text())
    assert summary["config"]["detect_every"] == 10 and summary["config"]["margin"] == 0.0  # the defaults
    # Both count from the process's start (first frame) or its first frame (work): within the command's wall.
    assert 0 < summary["first_frame_s"] and 0 < summary["work_seconds"]
    assert summary["first_frame_s"] + summary["work_seconds"] < wall
    assert "detect_every=10" in CacheReader(cache_path(root / "cache", "synthetic", "fer")).meta.detector
