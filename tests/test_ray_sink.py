"""The driver's side of ENGINE=ray without a cluster: batches out of order and twice still give each
video's rows once, in order, in a real shard; and without Ray installed, one line says what to do."""

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from extract.cache import CacheMeta, CacheReader, merge_shards
from extract.ray_sink import END, FAILED, FRAME, ShardSink
from extract.worker import Job, JobDone, Subject

REPO = Path(__file__).resolve().parents[1]
META = CacheMeta(backbone="toy", embedding_dim=3, input_size=(8, 8, 1))


def _frames(job_id, sample_id, seq):
    seq = np.asarray(seq)
    n = len(seq)
    return {
        "job_id": np.full(n, job_id),
        "sample_id": np.asarray([sample_id] * n, dtype=object),
        "seq": seq,
        "kind": np.full(n, FRAME, np.int8),
        "detail": np.asarray([""] * n, dtype=object),
        "frame_index": seq.astype(np.int32) + 1,
        "face_mask": seq % 3 != 0,
        "bbox": np.tile(seq[:, None].astype(np.float32), (1, 4)),
        "score": np.ones(n, np.float32),
        "embedding": np.tile(seq[:, None], (1, 3)).astype(np.float16),
        "audio": np.asarray([b""] * n, dtype=object),
    }


def _end(job_id, kind, detail):
    batch = _frames(job_id, "", [0])
    batch["kind"][:] = kind
    batch["detail"] = np.asarray([detail], dtype=object)
    return batch


def _concat(*batches):
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def test_rows_out_of_order_and_twice_are_written_once_in_order(tmp_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    jobs = [
        Job(0, "video", str(video), (Subject("a_left", "left"), Subject("a_right", "right"))),
        Job(1, "video", "b", (Subject("b"),)),
    ]
    summary = {"frames": 0, "faces": 0, "done": 0, "failed": [], "detected_frames": 0}
    sink = ShardSink(jobs, META, tmp_path / "parts", summary)
    done = json.dumps(asdict(JobDone(0, frames=10, detected=4, tiny=(3,))))
    sink.add(_concat(_frames(0, "a_left", range(5, 10)), _end(0, END, done)))  # the end before the rows
    sink.add(_frames(0, "a_left", [0, 1, 2, 3, 4]))
    assert summary["done"] == 0 and sink.written["a_left"] == 10  # a_right has no row yet
    sink.add(_concat(_frames(0, "a_right", range(0, 10)), _frames(0, "a_left", range(3, 8))))  # with a copy
    assert summary["done"] == 1 and summary["frames"] == 10 and summary["detected_frames"] == 4
    sink.add(_frames(0, "a_right", range(0, 7)))  # a retried task's copy, after the job closed
    sink.add(_concat(_frames(1, "b", [0, 1]), _end(1, FAILED, "b: not a video")))
    sink.abort()
    assert summary["failed"] == [{"path": "b", "reason": "b: not a video"}]
    assert summary["tiny_faces"] == [{"path": str(video), "frames": [3]}]
    out = tmp_path / "toy.h5"
    merge_shards(out, tmp_path / "parts", META)
    reader = CacheReader(out)
    assert reader.video_ids() == ["a_left", "a_right"]
    for vid in reader.video_ids():
        rows = reader.read(vid)
        np.testing.assert_array_equal(rows.frame_index, np.arange(1, 11))
        np.testing.assert_array_equal(rows.embeddings[:, 0], np.arange(10))
        np.testing.assert_array_equal(rows.face_mask, np.arange(10) % 3 != 0)


def test_a_gap_waits_for_the_rows_before_it(tmp_path):
    jobs = [Job(0, "frames", str(tmp_path), (Subject("c"),), 6)]
    summary = {"frames": 0, "faces": 0, "done": 0, "failed": [], "detected_frames": 0}
    sink = ShardSink(jobs, META, tmp_path / "parts", summary)
    sink.add(_concat(_frames(0, "c", [0, 1, 4, 5]), _end(0, END, json.dumps(asdict(JobDone(0, 6))))))
    assert summary["done"] == 0 and sink.written["c"] == 2  # 4 and 5 wait for 2 and 3
    sink.add(_frames(0, "c", [3, 2]))
    assert summary["done"] == 1 and sink.open_jobs == []
    merge_shards(tmp_path / "toy.h5", tmp_path / "parts", META)
    np.testing.assert_array_equal(CacheReader(tmp_path / "toy.h5").read("c").frame_index, np.arange(1, 7))


def test_without_ray_the_error_says_how_to_install_it(tmp_path):
    from data_manifests.synthetic import generate

    generate(tmp_path, seed=1, n_clips=3, min_frames=20, max_frames=22, raw_videos=0)
    probe = (
        "import sys; sys.modules['ray'] = None\n"
        "from extract.__main__ import main\n"
        f"sys.exit(main(['--dataset', 'synthetic', '--data-root', {str(tmp_path)!r}, '--cache-dir', "
        f"{str(tmp_path / 'cache')!r}, '--engine', 'ray']))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2, out.stderr[-2000:]
    err = out.stderr.strip().splitlines()[-1]
    assert err.startswith("error: ENGINE=ray needs Ray") and "requirements-ray.txt" in err
