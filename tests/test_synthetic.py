"""The synthetic dataset generator: layout, labels, content, determinism and idempotence."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from data_manifests import synthetic_faces as faces
from data_manifests.schema import AU_NAMES, COLUMNS, EXPR_CLASSES, DatasetError
from data_manifests.synthetic import DEFAULTS, STAMP, VERSION, generate, main, plan
from data_manifests.synthetic_timeline import EXPR_PROFILES, invalidate, timeline

SMALL = {"seed": 7, "n_clips": 8, "min_frames": 30, "max_frames": 50, "raw_videos": 2}
HEADERS = {
    "VA_Estimation_Challenge": "valence,arousal",
    "EXPR_Classification_Challenge": "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other",
    "AU_Detection_Challenge": "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26",
}
TASKS = dict(zip(HEADERS, ("va", "expr", "au")))
SPLIT_DIRS = {"train": "Train_Set", "validation": "Validation_Set"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("syn") / "synthetic"
    return root, generate(root, workers=2, **SMALL)


def _labels(root: Path, challenge: str, split: str, sample: str) -> np.ndarray | None:
    path = root / "annotations" / challenge / SPLIT_DIRS[split] / f"{sample}.txt"
    if not path.exists():
        return None
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)


def _files(root: Path) -> dict[str, str]:
    """Relative path -> md5 of every file the generator wrote except its run-specific notes."""
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in (STAMP, "README.txt")
    }


def _table(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "subjects.csv", keep_default_na=False)


def test_layout_headers_and_frame_names(tree):
    root, summary = tree
    assert sorted(p.name for p in root.iterdir()) == [
        STAMP,
        "README.txt",
        "annotations",
        "cropped_aligned",
        "subjects.csv",
        "videos",
        "wav",
    ]
    assert sorted(p.name for p in (root / "annotations").iterdir()) == sorted(HEADERS)
    for challenge, header in HEADERS.items():
        assert sorted(p.name for p in (root / "annotations" / challenge).iterdir()) == ["Train_Set", "Validation_Set"]
        for path in (root / "annotations" / challenge).rglob("*.txt"):
            assert path.read_text().splitlines()[0] == header, path
    table = _table(root)
    assert list(table.columns) == ["sample_id", "video", "subject", "side", "split"]
    assert sorted(p.name for p in (root / "cropped_aligned").iterdir()) == sorted(table.sample_id)
    assert summary["n_samples"] == len(table) == 9
    for sample in table.sample_id:
        names = sorted(p.name for p in (root / "cropped_aligned" / sample).iterdir())
        assert names and all(len(n) == 9 and n.endswith(".jpg") and n[:5].isdigit() for n in names)
        assert names[0] >= "00001.jpg"
    jpg = cv2.imread(str(next((root / "cropped_aligned" / table.sample_id[0]).glob("*.jpg"))))
    assert jpg.shape == (112, 112, 3)
    readme = (root / "README.txt").read_text()
    assert f"seed: {SMALL['seed']}" in readme and f"generator version: {VERSION}" in readme


def test_one_label_line_per_frame_and_jpgs_only_within_the_video(tree):
    root, summary = tree
    for s in summary["samples"]:
        n = s["n_frames"]
        for challenge, task in TASKS.items():
            labels = _labels(root, challenge, s["split"], s["sample_id"])
            assert (labels is not None) == (task in s["tasks"].split(","))
            assert labels is None or len(labels) == n, (challenge, s["sample_id"])
        present = sorted(int(p.stem) for p in (root / "cropped_aligned" / s["sample_id"]).iterdir())
        assert present[-1] <= n and present[0] >= 1
        assert n - len(present) == s["missing"]
    assert summary["n_missing_jpg"] > 0
    assert summary["n_frames"] == sum(s["n_frames"] for s in summary["samples"])
    for video in (root / "videos").glob("*.mp4"):
        cap = cv2.VideoCapture(str(video))
        count = 0
        while cap.read()[0]:
            count += 1
        assert count == next(s["n_frames"] for s in summary["samples"] if s["video"] == video.stem)


def test_label_values_in_range_and_every_invalid_marker_used(tree):
    root, summary = tree
    marks = {"va": 0, "expr": 0, "au": 0}
    for s in summary["samples"]:
        va = _labels(root, "VA_Estimation_Challenge", s["split"], s["sample_id"])
        expr = _labels(root, "EXPR_Classification_Challenge", s["split"], s["sample_id"])[:, 0]
        au = _labels(root, "AU_Detection_Challenge", s["split"], s["sample_id"])
        if va is not None:
            bad = (va == -5).all(axis=1)
            assert ((va == -5).any(axis=1) == bad).all()
            assert (np.abs(va[~bad]) <= 1).all()
            marks["va"] += bad.sum()
        assert np.isin(expr, np.arange(-1, 8)).all()
        marks["expr"] += (expr == -1).sum()
        if au is not None:
            assert au.shape[1] == len(AU_NAMES) and np.isin(au, (-1, 0, 1)).all()
            bad = (au == -1).any(axis=1)
            assert (au[bad] == -1).all()
            marks["au"] += bad.sum()
    assert all(v > 0 for v in marks.values()), marks


def test_every_class_in_both_splits_with_affwild2_like_imbalance(tree):
    root, summary = tree
    for split in ("train", "validation"):
        seen = set()
        for s in summary["samples"]:
            if s["split"] == split:
                seen |= set(
                    _labels(root, "EXPR_Classification_Challenge", split, s["sample_id"])[:, 0].astype(int).tolist()
                )
        assert set(range(8)) <= seen, split
        assert all(summary["expr_counts"][split][c] > 0 for c in EXPR_CLASSES)
    # The default size, from the same functions generate() writes with (no drawing needed).
    counts = np.zeros(8)
    for video in plan(0, *DEFAULTS.values()):
        for p in video["samples"]:
            tl = timeline(np.random.default_rng([*p.seed, 0]), video["n_frames"], p.forced)
            expr = invalidate(np.random.default_rng([*p.seed, 2]), tl)["expr"]
            counts += np.bincount(expr[expr >= 0], minlength=8)
    share = dict(zip(EXPR_CLASSES, counts / counts.sum()))
    assert 2500 < counts.sum() < 4500
    for rare in ("Fear", "Disgust"):
        assert 0 < share[rare] < 0.04
        assert share["Neutral"] > 5 * share[rare] and share["Other"] > 5 * share[rare]
    assert share["Neutral"] + share["Other"] > 0.45


def test_aus_and_va_follow_the_expression_and_change_smoothly():
    expr, au, va, strength = [], [], [], []
    for video in plan(0, *DEFAULTS.values()):
        for p in video["samples"]:
            tl = timeline(np.random.default_rng([*p.seed, 0]), video["n_frames"], p.forced)
            expr.append(tl["expr"])
            au.append(tl["au"])
            va.append(tl["va"])
            strength.append(tl["strength"])
            assert np.abs(np.diff(tl["va"], axis=0)).max() < 0.15  # smooth valence/arousal
            assert np.abs(np.diff(tl["strength"])).max() < 0.4  # ramps, no jumps to the apex
    expr, au, va = np.concatenate(expr), np.concatenate(au), np.concatenate(va)
    rate = {c: dict(zip(AU_NAMES, au[expr == k].mean(axis=0))) for k, c in enumerate(EXPR_CLASSES)}
    assert rate["Happiness"]["AU12"] > 0.6 and rate["Happiness"]["AU6"] > 0.5
    assert rate["Anger"]["AU4"] > 0.6 and rate["Sadness"]["AU15"] > 0.5
    assert min(rate["Surprise"][a] for a in ("AU1", "AU2", "AU25", "AU26")) > 0.5
    assert max(rate["Neutral"].values()) < 0.1
    mean = {c: va[expr == k].mean(axis=0) for k, c in enumerate(EXPR_CLASSES)}
    assert mean["Happiness"][0] > mean["Sadness"][0] + 0.5
    assert mean["Surprise"][1] > mean["Sadness"][1] + 0.3
    rising = np.concatenate([np.diff(s) for s in strength]) > 0.05
    assert rising.sum() > 4 * 50  # onsets last several frames


def test_split_is_subject_disjoint_and_matches_the_annotation_folders(tree):
    root, _ = tree
    table = _table(root)
    per_subject = table.groupby("subject")["split"].nunique()
    assert (per_subject == 1).all()
    assert (table.groupby("subject").size() >= 2).all()
    for row in table.itertuples():
        folder = root / "annotations" / "EXPR_Classification_Challenge" / SPLIT_DIRS[row.split]
        assert (folder / f"{row.sample_id}.txt").exists()
    videos = plan(0, *DEFAULTS.values())
    splits = [p.split for v in videos for p in v["samples"]]
    assert 0.55 < splits.count("train") / len(splits) < 0.75
    assert len({p.subject.name for v in videos for p in v["samples"]}) >= 6


def test_two_subject_video_and_blazeface_finds_the_raw_faces(tree):
    mp = pytest.importorskip("mediapipe")
    root, summary = tree
    table = _table(root)
    pairs = table[table.side != ""].groupby("video")
    assert len(pairs) >= 1
    for video, rows in pairs:
        assert sorted(rows.side) == ["left", "right"] and rows.subject.nunique() == 2
        assert sorted(rows.sample_id) == [f"{video}_left", f"{video}_right"]
        assert rows.split.nunique() == 1
        for sample in rows.sample_id:
            assert (root / "cropped_aligned" / sample).is_dir()
            for challenge in HEADERS:
                assert _labels(root, challenge, rows.split.iloc[0], sample) is not None
        assert (root / "videos" / f"{video}.mp4").is_file()
    hits = expected = extra = 0
    with mp.solutions.face_detection.FaceDetection(model_selection=0) as detector:
        for path in sorted((root / "videos").glob("*.mp4")):
            rows = table[table.video == path.stem]
            cap = cv2.VideoCapture(str(path))
            for t in itertools.count(1):
                ok, frame = cap.read()
                if not ok:
                    break
                found = detector.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).detections or []
                centres = [
                    d.location_data.relative_bounding_box.xmin + d.location_data.relative_bounding_box.width / 2
                    for d in found
                ]
                present = 0
                for sample, side in zip(rows.sample_id, rows.side):
                    if not (root / "cropped_aligned" / sample / f"{t:05d}.jpg").exists():
                        continue  # the face is lost: no jpg, and no face in the raw frame
                    present += 1
                    lo, hi = {"": (0, 1), "left": (0, 0.5), "right": (0.5, 1)}[side]
                    expected += 1
                    hits += any(lo <= c < hi for c in centres)
                extra += max(0, len(found) - present)
    assert expected >= 60
    assert hits / expected > 0.9 and extra <= 0.02 * expected


def test_expressions_are_visible_in_the_rendered_face():
    rng = np.random.default_rng(0)
    for i in range(5):
        subject = faces.random_subject(rng, f"s{i}", i)
        images = []
        for name in EXPR_CLASSES:
            act = np.zeros(len(faces.ACTIONS))
            for action, value in EXPR_PROFILES[name].items():
                act[faces.A[action]] = value
            images.append(faces.render_face(subject, act, 112, 1.3)[0].astype(np.float32).mean(2))
        for a, b in itertools.combinations(range(8), 2):
            changed = (np.abs(images[a] - images[b]) > 12).mean()
            assert changed > 0.015, (subject.name, EXPR_CLASSES[a], EXPR_CLASSES[b], changed)


def test_happiness_apex_differs_from_neutral_around_the_mouth(tree):
    root, summary = tree
    best = None
    for s in summary["samples"]:
        expr = _labels(root, "EXPR_Classification_Challenge", s["split"], s["sample_id"])[:, 0]
        au = _labels(root, "AU_Detection_Challenge", s["split"], s["sample_id"])
        if au is None:
            continue
        has = np.array(
            [(root / "cropped_aligned" / s["sample_id"] / f"{t:05d}.jpg").exists() for t in range(1, len(expr) + 1)]
        )
        happy = np.flatnonzero((expr == 4) & (au[:, AU_NAMES.index("AU12")] == 1) & has)
        calm = np.flatnonzero((expr == 0) & (au == 0).all(axis=1) & has)
        if best is None or min(len(happy), len(calm)) > min(len(best[1]), len(best[2])):
            best = (s["sample_id"], happy, calm)
    sample, happy, calm = best
    assert len(happy) >= 3 and len(calm) >= 6

    def median(frames):
        imgs = [cv2.imread(str(root / "cropped_aligned" / sample / f"{t + 1:05d}.jpg"), 0) for t in frames]
        # Normalised for brightness: light drifts between the two moments.
        return np.median([128 * im / im.mean() for im in np.float32(imgs)], axis=0)

    mouth = (slice(70, 98), slice(34, 78))
    signal = np.abs(median(happy) - median(calm))[mouth].mean()
    control = np.abs(median(calm[::2]) - median(calm[1::2]))[mouth].mean()
    assert signal > 6 and signal > 2.5 * control, (signal, control)


def test_same_seed_same_bytes_whatever_the_worker_count(tree, tmp_path):
    root, _ = tree
    twin = generate(tmp_path / "twin", workers=1, **SMALL)
    assert not twin["skipped"]
    files = _files(root)
    assert any(k.endswith(".jpg") for k in files) and any(k.endswith(".mp4") for k in files)
    assert _files(tmp_path / "twin") == files


def test_stamp_makes_generation_idempotent_and_another_seed_differs(tmp_path):
    out = tmp_path / "data" / "synthetic"
    args = {"seed": 1, "n_clips": 3, "min_frames": 20, "max_frames": 24, "raw_videos": 0}
    first = generate(out, workers=1, **args)
    first_files = _files(out)
    stamp = json.loads((out / STAMP).read_text())
    assert stamp["version"] == VERSION and stamp["params"]["seed"] == 1
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = main(
        [
            "--out",
            str(out),
            "--seed",
            "1",
            "--clips",
            "3",
            "--min-frames",
            "20",
            "--max-frames",
            "24",
            "--raw-videos",
            "0",
        ]
    )
    assert again["skipped"] and again["n_frames"] == first["n_frames"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes
    (tmp_path / "data" / ".synthetic.partial").mkdir()  # left by a run that was killed
    (tmp_path / "data" / ".synthetic.partial" / "junk").write_text("x")
    changed = generate(out, workers=2, **{**args, "seed": 2})
    assert not changed["skipped"] and "seed: 2" in (out / "README.txt").read_text()
    assert not (tmp_path / "data" / ".synthetic.partial").exists()
    files = _files(out)
    shared = [k for k in files if k in first_files and k.endswith(".txt")]
    assert len(shared) >= 3 and all(files[k] != first_files[k] for k in shared)


def test_refuses_a_foreign_folder_and_bad_arguments(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match=r"mine: exists, is not empty and was not written by"):
        generate(foreign, n_clips=3, min_frames=20, max_frames=24, raw_videos=0)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match=r"need n_clips >= 3.*got n_clips=2"):
        generate(tmp_path / "x", n_clips=2)
    with pytest.raises(SystemExit) as err:
        main(["--out", str(tmp_path / "y"), "--min-frames", "50", "--max-frames", "40"])
    assert err.value.code == 2


def test_loader_reads_the_tree(tree):
    loader = pytest.importorskip("data_manifests.loader")
    root, summary = tree
    table = loader.load_dataset("synthetic", root)
    assert list(table.columns) == list(COLUMNS)
    assert set(table.task) == {"va", "expr", "au"}
    by_sample = {s["sample_id"]: s for s in summary["samples"]}
    subjects = _table(root).set_index("sample_id")["subject"]
    for row in table.itertuples():
        s = by_sample[row.sample_id]
        assert row.subject == subjects[row.sample_id] and row.split == s["split"]
        assert len(row.frame_index) == s["n_frames"] and row.frame_index[0] == 1
        assert Path(row.frames_dir) == root / "cropped_aligned" / row.sample_id
        assert bool(row.media_path) == s["raw"]
        if row.task == "expr":
            written = _labels(root, "EXPR_Classification_Challenge", s["split"], row.sample_id)
            assert (row.labels == written[:, 0]).all()
            assert (row.valid == (written[:, 0] != -1)).all()


def test_every_video_but_one_has_a_voice_that_follows_arousal(tree):
    av = pytest.importorskip("av")
    sf = pytest.importorskip("soundfile")
    root, summary = tree
    videos = {s["video"]: s for s in summary["samples"]}
    wavs = {p.stem for p in (root / "wav").glob("*.wav")}
    assert len(videos) - len(wavs) == 1  # one silent clip: a raw video without a track or a WAV
    (silent,) = set(videos) - wavs
    assert videos[silent]["raw"]
    for mp4 in (root / "videos").glob("*.mp4"):
        with av.open(str(mp4)) as c:
            assert len(c.streams.audio) == (mp4.stem != silent)
    rs = []
    for name in sorted(wavs):
        samples, rate = sf.read(root / "wav" / f"{name}.wav", dtype="float32")
        sample = videos[name]
        assert rate == 16_000 and abs(len(samples) / rate - sample["n_frames"] / 30) < 0.01
        if sample["side"]:
            continue  # two voices in one track
        va = _labels(root, "VA_Estimation_Challenge", sample["split"], sample["sample_id"])
        if va is None:
            continue
        frames = samples[: len(va) * 533].reshape(len(va), 533)  # 16000 / 30 samples per frame
        level = np.log(np.sqrt((frames**2).mean(axis=1)) + 1e-6)
        speaking = (level > np.log(0.01)) & (va[:, 1] > -5)
        rs.append(np.corrcoef(level[speaking], va[speaking, 1])[0, 1])
    assert np.median(rs) > 0.3  # louder when more aroused, through pauses, syllables and emphasis
