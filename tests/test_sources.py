"""Decoding: every decoded frame, 1-based; frame folders with gaps; bad files named with a fix."""

import logging
import re
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from extract.sources import SourceError, VideoInfo, iter_frame_folder, iter_video, probe_video

MEDIA = Path(__file__).parent / "media"


def at(path: Path) -> str:
    """Regex for the start of a SourceError message about ``path``."""
    return "^" + re.escape(str(path)) + ": "


def media(name: str) -> Path:
    path = MEDIA / name
    if not path.is_file():
        pytest.fail(f"{path} is missing; run `make media`")
    return path


def test_no_face_video_yields_every_decoded_frame_not_the_header_count():
    path = media("no_face.mp4")
    assert probe_video(path).frames_header == 98
    indices = []
    for frame_index, rgb in iter_video(path):
        assert rgb.dtype == np.uint8 and rgb.shape == (540, 960, 3)
        indices.append(frame_index)
    assert indices == list(range(1, 96))


def test_probe_single_face_video():
    info = probe_video(media("single_face.mp4"))
    assert info == VideoInfo(frames_header=72, fps=30.0, width=640, height=360)
    assert sum(1 for _ in iter_video(media("single_face.mp4"), threads=0)) == 72


def test_frames_are_rgb_and_exact_count_of_a_written_video(tmp_path):
    path = tmp_path / "colours.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    rgb_colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)] * 4
    for colour in rgb_colours:
        writer.write(np.full((48, 64, 3), colour[::-1], dtype=np.uint8))
    writer.release()
    frames = list(iter_video(path))
    assert [i for i, _ in frames] == list(range(1, 13))
    for (_, rgb), colour in zip(frames, rgb_colours):
        assert rgb.shape == (48, 64, 3)
        assert np.abs(rgb.reshape(-1, 3).mean(0) - colour).max() < 10


def test_missing_file(tmp_path):
    path = tmp_path / "absent.mp4"
    with pytest.raises(SourceError, match=at(path) + r"no such file; check the manifest"):
        list(iter_video(path))
    with pytest.raises(SourceError, match="no such file"):
        probe_video(path)


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video at all\n")
    with pytest.raises(SourceError, match=at(path) + r"cannot be opened as a video .*; check the file"):
        list(iter_video(path))
    with pytest.raises(SourceError, match="cannot be opened as a video"):
        probe_video(path)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(SourceError, match=at(path) + r"empty file \(0 bytes\); download or copy"):
        list(iter_video(path))


def test_folder_instead_of_video(tmp_path):
    with pytest.raises(SourceError, match=at(tmp_path) + r"not a file"):
        list(iter_video(tmp_path))


def test_truncated_mp4_with_index_at_the_end_cannot_be_opened(tmp_path):
    # single_face.mp4 keeps its moov atom (the index) after the media data: the first half has none.
    data = media("single_face.mp4").read_bytes()
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=at(path) + r"cannot be opened as a video"):
        list(iter_video(path))


def test_truncated_faststart_mp4_yields_the_frames_before_the_cut(tmp_path, caplog):
    # WolfgangLanger_Pexels.mp4 has its index first: the first half opens and decodes to the cut.
    data = media("WolfgangLanger_Pexels.mp4").read_bytes()
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 2])
    assert probe_video(path).frames_header == 472
    with caplog.at_level(logging.WARNING, logger="extract.sources"):
        indices = [i for i, _ in iter_video(path)]
    assert 100 < len(indices) < 472
    assert indices == list(range(1, len(indices) + 1))
    assert f"decoded {len(indices)} of the 472 frames" in caplog.text and "truncated" in caplog.text


def test_file_that_opens_but_decodes_no_frame(tmp_path):
    data = media("WolfgangLanger_Pexels.mp4").read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[:12000])  # the index and a few bytes of the first frame
    with pytest.raises(SourceError, match=at(path) + r"the decoder returned no frame"):
        list(iter_video(path))


def _write_frames(folder: Path, colours: dict[int, tuple[int, int, int]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for number, rgb in colours.items():
        assert cv2.imwrite(str(folder / f"{number:05d}.jpg"), np.full((16, 16, 3), rgb[::-1], dtype=np.uint8))


COLOURS = {1: (200, 30, 30), 2: (30, 200, 30), 4: (30, 30, 200), 7: (120, 120, 20)}


def test_frame_folder_yields_every_index_with_none_at_gaps(tmp_path):
    _write_frames(tmp_path, COLOURS)
    (tmp_path / "notes.txt").write_text("ignored")
    got = list(iter_frame_folder(tmp_path))
    assert [i for i, _ in got] == list(range(1, 8))
    assert [i for i, img in got if img is None] == [3, 5, 6]
    for i, img in got:
        if img is not None:
            assert img.shape == (16, 16, 3) and img.dtype == np.uint8
            assert np.abs(img.reshape(-1, 3).mean(0) - COLOURS[i]).max() < 6


def test_frame_folder_honours_n_frames_beyond_the_last_jpg(tmp_path):
    _write_frames(tmp_path, COLOURS)
    got = list(iter_frame_folder(tmp_path, n_frames=10))
    assert [i for i, _ in got] == list(range(1, 11))
    assert [i for i, img in got if img is None] == [3, 5, 6, 8, 9, 10]
    # A count below the highest jpg never drops a frame.
    assert [i for i, _ in iter_frame_folder(tmp_path, n_frames=5)] == list(range(1, 8))


def test_corrupt_jpg_is_named_after_the_frames_before_it(tmp_path):
    _write_frames(tmp_path, COLOURS)
    bad = tmp_path / "00004.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    seen = []
    with pytest.raises(SourceError, match=at(bad) + r"not a decodable JPEG .*; replace it, or delete it"):
        for i, _ in iter_frame_folder(tmp_path):
            seen.append(i)
    assert seen == [1, 2, 3]


def test_truncated_jpg_is_an_error_not_a_grey_image(tmp_path):
    # libjpeg decodes a cut file to a full-size image, grey below the cut, with only a warning.
    data = media("single_face.jpg").read_bytes()
    bad = tmp_path / "00001.jpg"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=at(bad) + r"not a decodable JPEG"):
        list(iter_frame_folder(tmp_path))


def test_empty_or_missing_frame_folder(tmp_path):
    with pytest.raises(SourceError, match=at(tmp_path) + r"no frame images named like 00001.jpg"):
        list(iter_frame_folder(tmp_path))
    missing = tmp_path / "absent"
    with pytest.raises(SourceError, match=at(missing) + r"no such frame folder"):
        list(iter_frame_folder(missing))


def test_frame_zero_is_rejected(tmp_path):
    _write_frames(tmp_path, {0: (0, 0, 0), 1: (0, 0, 0)})
    with pytest.raises(SourceError, match=r"00000\.jpg: frame numbers are 1-based"):
        list(iter_frame_folder(tmp_path))


def _opencv_frames(path: Path) -> list[np.ndarray]:
    capture, frames = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1]), []
    while True:
        ok, bgr = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _rotated(src: Path, out: Path) -> Path:
    """``src`` with its video track's display matrix set to a 90 degree turn (as a phone writes it)."""
    data = bytearray(src.read_bytes())
    at = data.find(b"tkhd")
    while at >= 0:
        matrix = at + 4 + 4 + 20 + 8 + 8  # version+flags, times/track/duration (version 0), reserved, layer..volume
        if struct.unpack(">I", data[matrix + 36 : matrix + 40])[0]:  # the track with a width: video
            data[matrix : matrix + 36] = struct.pack(">9I", 0, 0x10000, 0, 0xFFFF0000, 0, 0, 0, 0, 0x40000000)
        at = data.find(b"tkhd", at + 1)
    out.write_bytes(data)
    return out


def test_frames_are_opencvs_byte_for_byte(tmp_path):
    # Caches made while OpenCV decoded stay valid: the same frames, the same count, the same turn.
    data = media("WolfgangLanger_Pexels.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    videos = [media(n) for n in ("no_face.mp4", "single_face.mp4", "face_noface.mov")]  # h264, hevc BT.709
    videos += [_rotated(media("single_face.mp4"), tmp_path / "turned.mp4"), tmp_path / "half.mp4"]
    for path in videos:
        ours, theirs = [rgb for _, rgb in iter_video(path)], _opencv_frames(path)
        assert len(ours) == len(theirs) > 0, path
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs)), path
    assert ours[0].shape == (360, 640, 3) and theirs[0].shape == (360, 640, 3)  # the cut file
    turned = next(iter_video(tmp_path / "turned.mp4"))[1]
    assert turned.shape == (640, 360, 3)  # upright: 360 wide
