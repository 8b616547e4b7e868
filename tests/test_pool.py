"""The worker processes: they fork from one server that has paid their imports (LiteRT for BlazeFace,
librosa) once, and the parent never imports them, nor mediapipe anywhere. Real processes, read
through /proc."""

import importlib.util
import json
import multiprocessing as mp
import os
import subprocess
import sys

import pytest

from extract.pool import worker_imports

# Starts a pool as a video run with AUDIO=logmel does, then reads the processes from /proc.
PROBE = """
import json, os, sys
from pathlib import Path
from extract.pool import WorkerPool

def ppid(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

with WorkerPool(2, warm_up_detector=True, warm_up_audio="logmel") as pool:
    pool.join_start()
    server = {ppid(p.pid) for p in pool.procs}
    maps = Path(f"/proc/{min(server)}/maps").read_text()
    print(json.dumps({
        "server": sorted(server), "parent": os.getpid(),
        "server_litert": "_pywrap_litert_interpreter_wrapper" in maps, "server_numba": "llvmlite" in maps,
        "server_mediapipe": "_framework_bindings" in maps,
        "parent_blazeface": "extract.blazeface" in sys.modules, "parent_librosa": "librosa" in sys.modules,
    }))
print(json.dumps({"exitcodes": [p.exitcode for p in pool.procs]}))
"""


@pytest.mark.parametrize("detector,audio", [(True, "logmel"), (True, "mfcc"), (True, "egemaps"), (False, "")])
def test_every_module_the_workers_preload_exists(detector, audio):
    # The fork server skips a module it cannot import without a word: a renamed one would just be slow.
    modules = worker_imports(detector, audio)
    if audio == "egemaps" and importlib.util.find_spec("opensmile") is None:
        modules.remove("opensmile")
    assert [m for m in modules if importlib.util.find_spec(m) is None] == []
    assert "mediapipe" not in modules
    assert ("extract.blazeface" in modules) == detector and any(m.startswith("librosa") for m in modules) == (
        audio in ("logmel", "mfcc")
    )


def test_a_file_model_adds_no_import_to_the_workers():
    assert worker_imports(True, "file:model.keras") == worker_imports(True, "")


@pytest.mark.skipif("forkserver" not in mp.get_all_start_methods(), reason="no fork on this platform")
def test_workers_fork_from_one_server_that_imported_litert_and_librosa():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen, end = (json.loads(line) for line in done.stdout.strip().splitlines()[-2:])
    assert len(seen["server"]) == 1 and seen["server"][0] != seen["parent"]
    assert seen["server_litert"] and seen["server_numba"]
    assert not seen["server_mediapipe"]  # BlazeFace runs on LiteRT: mediapipe's runtime is never loaded
    assert not seen["parent_blazeface"] and not seen["parent_librosa"]
    assert end["exitcodes"] == [0, 0]


@pytest.mark.skipif("forkserver" not in mp.get_all_start_methods(), reason="no fork on this platform")
def test_a_worker_runs_opencv_on_one_thread():
    # OpenCV's own pool would split each small flow and resize over every core and spin: 27% of a worker.
    probe = (
        "import cv2, json\n"
        "from extract.pool import worker_context\n"
        "if __name__ == '__main__':\n"
        "    with worker_context(['cv2']).Pool(1) as pool:\n"
        "        print(json.dumps({'worker': pool.apply(cv2.getNumThreads), 'parent': cv2.getNumThreads()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_FOR_THREADS_NUM"}  # a test may have imported worker_env
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    threads = json.loads(done.stdout.strip().splitlines()[-1])
    assert threads["worker"] == 1
    if (os.cpu_count() or 1) > 1:
        assert threads["parent"] > 1  # only the workers: the parent's own pool is left as it is
