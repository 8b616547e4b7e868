"""Miniature dataset trees in each layout's exact on-disk format, for the manifest tests.

Each builder writes the label files as text, plus tiny jpgs/videos with cv2, and returns the root.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

VA_HEADER = "valence,arousal"
EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
AU_HEADER = "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26"
ERI_HEADER = "Adoration,Amusement,Anxiety,Disgust,Empathic-Pain,Fear,Surprise"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def jpg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((8, 8, 3), 128, np.uint8))


def video(path: Path, n_frames: int = 3) -> Path:
    """A tiny real video (mp4v for .mp4, MJPG otherwise) of ``n_frames`` 16x16 frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if path.suffix == ".mp4" else "MJPG"))
    writer = cv2.VideoWriter(str(path), fourcc, 25.0, (16, 16))
    assert writer.isOpened(), path
    for i in range(n_frames):
        writer.write(np.full((16, 16, 3), 40 * i, np.uint8))
    writer.release()
    assert path.stat().st_size > 0
    return path


def affwild2(
    root: Path,
    annotations: str = "6th ABAW Annotations",
    expr_folder: str = "EXPR_Recognition_Challenge",
    videos: str = "videos",
) -> Path:
    """An ABAW-style tree with two videos, one of them with two subjects (left/right).

    - ``vidA``: VA train (4 frames, frame 3 unannotated -5), AU validation (2 frames, one -1);
      cropped frames 1, 2, 4 (frame 3: face lost, no jpg); video in ``<videos>/batch1/``.
    - ``vidB`` (``.avi`` in ``<videos>/new_vids/more/``): ``vidB_left`` VA validation (2 frames) and
      EXPR train (3 frames, one -1); ``vidB_right`` EXPR train (5 frames); only ``vidB_left`` has
      cropped frames.
    """
    ann = root / annotations if annotations else root
    write(ann / "VA_Estimation_Challenge/Train_Set/vidA.txt", f"{VA_HEADER}\n0.5,-0.25\n-1,1\n-5,-5\n0.125,0.0\n")
    write(ann / "VA_Estimation_Challenge/Validation_Set/vidB_left.txt", f"{VA_HEADER}\r\n0.1,0.2\r\n-0.3,0.4\r\n")
    write(ann / f"{expr_folder}/Train_Set/vidB_left.txt", f"{EXPR_HEADER}\n0\n-1\n7\n")
    write(ann / f"{expr_folder}/Train_Set/vidB_right.txt", f"{EXPR_HEADER}\n4\n4\n5\n6\n3\n")
    write(
        ann / "AU_Detection_Challenge/Validation_Set/vidA.txt",
        f"{AU_HEADER}\n1,0,0,0,0,0,1,0,0,0,1,0\n-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1\n",
    )
    for frame in (1, 2, 4):
        jpg(root / f"cropped_aligned/vidA/{frame:05d}.jpg")
    jpg(root / "cropped_aligned/vidB_left/00001.jpg")
    base = root / videos if videos else root
    video(base / "batch1/vidA.mp4")
    video(base / "new_vids/more/vidB.avi")
    return root
