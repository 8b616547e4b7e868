"""``AUDIO=file:<model.keras>``: a user's saved Keras audio model as an audio extractor.

The model is loaded with ``safe_mode=True`` and applied to patches of the 64-band log-mel rows
that ``AUDIO=logmel`` computes (``extract.audio.logmel``: 25 ms windows, 10 ms hop): its input is
``[batch, P, 64]`` or ``[batch, P, 64, 1]`` for a patch of ``P`` rows, its output ``[batch, D]``.
A patch starts every :data:`PATCH_HOP` rows (20 ms, so every video frame up to 50 fps gets at
least one) and is pooled onto the frame that holds its centre, like any other row. The model's
own layers do any normalisation it was trained with. The cache records the model's sha256, and
is named after the file's folder and stem (``file:runs/a1/model.keras`` ->
``audio-file-a1-model.h5``), as a visual ``file:`` backbone is.

Example::

    spec = model_spec("file:models/audio_cnn.keras")   # a [B, 96, 64, 1] -> [B, 128] CNN
    spec.dim, spec.offset                              # (128, 0.4875)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.registry import ConfigError
from extract import audio

PATCH_HOP = 2  # rows between patch starts
BATCH = 256
_MODELS: dict[str, tuple] = {}  # path -> (model, patch rows, channel axis): one load per process


def check_file(path: str) -> Path:
    """``path`` as a Path, or the one-line error that says what was expected."""
    p = Path(path)
    if p.suffix != ".keras" or not p.is_file():
        raise ConfigError(
            f"AUDIO=file:{path}: no such .keras file; give a saved Keras audio model "
            f"(input [batch, rows, {audio.N_MELS}] or [batch, rows, {audio.N_MELS}, 1] of log-mel, output [batch, D])"
        )
    return p


def _load(path: str) -> tuple:
    if path not in _MODELS:
        import keras

        model = keras.saving.load_model(check_file(path), safe_mode=True)
        shape, out = tuple(model.input_shape), tuple(model.output_shape)
        ok = len(shape) in (3, 4) and shape[2] == audio.N_MELS and (len(shape) == 3 or shape[3] == 1)
        if not ok or shape[1] is None or len(out) != 2 or out[1] is None:
            raise ConfigError(
                f"AUDIO=file:{path}: the model maps {shape} to {out}; expected a fixed number of log-mel rows, "
                f"[batch, rows, {audio.N_MELS}] or [batch, rows, {audio.N_MELS}, 1], to [batch, D]"
            )
        _MODELS[path] = (model, int(shape[1]), len(shape) == 4)
    return _MODELS[path]


def _patches(path: str, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model's output on every patch of ``block``'s log-mel rows, and each patch's start in samples."""
    model, rows, channel = _load(path)
    mel, _ = audio.logmel(block)
    starts = np.arange(0, len(mel) - rows + 1, PATCH_HOP)
    if not len(starts):
        return np.zeros((0, int(model.output_shape[1])), np.float32), np.zeros(0, np.int64)
    patches = np.lib.stride_tricks.sliding_window_view(mel, (rows, audio.N_MELS))[starts, 0]
    if channel:
        patches = patches[..., None]
    out = np.asarray(model.predict(patches, batch_size=BATCH, verbose=0), np.float32)
    return out, starts.astype(np.int64) * audio.HOP


def model_spec(name: str) -> audio.AudioSpec:
    """The ``AudioSpec`` of ``file:<path>`` (loads the model once per process)."""
    from functools import partial

    from extract.backbone_models import sha256_file

    path = name[len(audio.FILE_PREFIX) :]
    model, rows, _ = _load(path)
    sha = sha256_file(path)
    return audio.AudioSpec(
        name=name,
        dim=int(model.output_shape[1]),
        compute=partial(_patches, path),
        describe=f"Keras model {Path(path).name} (sha256 {sha[:12]}) on log-mel patches of {rows} rows, "
        f"one every {PATCH_HOP} rows",
        context=(rows - 1) * audio.HOP + audio.WINDOW + PATCH_HOP * audio.HOP,
        stride=PATCH_HOP * audio.HOP,
        offset=((rows - 1) * audio.HOP + audio.WINDOW) / 2 / audio.SAMPLE_RATE,  # the patch's centre
        extra=(("weights_sha256", sha), ("patch_rows", rows), ("patch_hop", PATCH_HOP)),
        in_worker=False,  # Keras: the run's own audio process, not a video worker
    )
