"""What a dataset loader returns: the sample table's columns and each task's label layout.

Every loader (one per on-disk layout) returns a :class:`pandas.DataFrame` with one row per
(sample, task) and exactly the columns in :data:`COLUMNS`. A *sample* is what the cache stores as
one group: a video, or one subject of a two-subject video (Aff-Wild2 ``<video>_left``).
"""

from __future__ import annotations

from dataclasses import dataclass


class DatasetError(ValueError):
    """A dataset that cannot be read; the message names the file, the line and what was expected."""


@dataclass(frozen=True)
class LabelSpec:
    """How one task's labels look.

    Args:
        names: one name per output (AU names, class names, dimensions).
        kind: ``regression`` (float per output), ``class`` (one int in [0, len(names))),
            or ``multilabel`` (0/1 per output).
        invalid: the value that marks an unannotated frame in the official files.
        level: ``frame`` (labels joined to frames by frame number) or ``clip`` (one per sample).
    """

    names: tuple[str, ...]
    kind: str
    invalid: float | None
    level: str = "frame"


EXPR_CLASSES = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other")
AU_NAMES = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26")
AFEW_CLASSES = ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
ERI_NAMES = ("Adoration", "Amusement", "Anxiety", "Disgust", "Empathic-Pain", "Fear", "Surprise")

LABELS: dict[str, LabelSpec] = {
    "va": LabelSpec(("valence", "arousal"), "regression", -5.0),
    "expr": LabelSpec(EXPR_CLASSES, "class", -1),
    "au": LabelSpec(AU_NAMES, "multilabel", -1),
    "eri": LabelSpec(ERI_NAMES, "regression", None, level="clip"),
    "clip": LabelSpec(AFEW_CLASSES, "class", None, level="clip"),
}

SPLITS = ("train", "validation", "test")

# Column -> meaning. Array columns hold numpy arrays (object dtype in pandas).
COLUMNS: dict[str, str] = {
    "sample_id": "str: cache group name, unique per sample (e.g. '10-60-1280x720_left')",
    "video": "str: the media name the sample comes from (without _left/_right)",
    "subject": "str: person id, for subject-independent splits",
    "side": "str: 'left', 'right' or '' for the two-subject videos of Aff-Wild2",
    "split": "str: one of SPLITS (per task: Aff-Wild2 splits differ between challenges)",
    "task": "str: a key of LABELS",
    "media_path": "str: raw video file, '' if none was found",
    "frames_dir": "str: folder of pre-cropped frames named 00001.jpg..., '' if none",
    "audio_path": "str: the dataset's own audio file of the video (a WAV), '' if none (the video's track is used)",
    "frame_index": "int32 [N]: 1-based frame numbers of the labels (frame tasks); None for clip tasks",
    "labels": "frame tasks: float32 [N, K] (va, au) or int64 [N] (expr); clip tasks: float32 [K] or int",
    "valid": "bool [N] (frame tasks) or bool (clip tasks): False where the label is the invalid marker",
}
