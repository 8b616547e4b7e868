"""A video's audio, extracted in the pass that decodes its frames for the faces: with ``AUDIO=`` and
``BACKBONE=`` together, each video is read and decoded once (``extract.sources.iter_video`` hands
this module the audio packets of the same demux pass and each frame's time).

:class:`AudioTask` travels with a video job (``extract.worker.Job.audio``); the worker runs an
:class:`AudioPass` beside its face detection and writes the audio shards itself, through
:class:`ShardOut`, a few thousand pooled frames at a time, as ``extract.audio_run`` does for the
recordings it reads on its own (a dataset's WAV files, frames mode). The shards are those of the
audio cache (``audio-<extractor>.h5``), so a killed run keeps every finished video of both caches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import av
import numpy as np

from extract.cache import CacheMeta, VideoWriter

WRITE_ROWS = 4096
TAKE_EVERY = 64  # video frames between two looks at which pooled frames are final


@dataclass(frozen=True)
class AudioTask:
    """The audio a video job extracts too: the extractor, the audio cache's shard folder, the samples
    whose shards get the rows (the subjects of a two-person video share its sound), their attributes."""

    name: str
    parts: str
    subjects: tuple[str, ...]
    meta: CacheMeta


class ShardOut:
    """Pooled frames (``extract.audio.FramePool.take``) into the audio shard of every subject of one
    recording, in appends of ``WRITE_ROWS`` frames."""

    def __init__(self, parts: str, subjects: tuple[str, ...], meta: CacheMeta, source: str):
        from extract.fingerprint import fingerprint

        stamp = fingerprint(source)
        self.writers = [VideoWriter(parts, s, meta, source=source, fingerprint=stamp) for s in subjects]
        self.held: list[tuple] = []
        self.frames = 0
        self.with_audio = 0

    def add(self, first: int, features: np.ndarray, mask: np.ndarray, count: np.ndarray) -> None:
        if len(mask):
            self.held.append((first, features, mask, count))
        if sum(len(h[2]) for h in self.held) >= WRITE_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.held:
            return
        first = self.held[0][0]
        features, mask, count = (np.concatenate([h[i] for h in self.held]) for i in (1, 2, 3))
        n = len(mask)
        for writer in self.writers:
            writer.append(features, np.arange(first + 1, first + n + 1), mask, np.zeros((n, 4)), count)
        self.frames += n
        self.with_audio += int(mask.sum())
        self.held = []

    def close(self) -> None:
        self.flush()
        for writer in self.writers:
            writer.close()

    def abort(self) -> None:
        for writer in self.writers:
            writer.abort()

    def result(self, source: str, samples: int, video_seconds: float, started: float) -> dict:
        """A closed recording's counts, as ``extract.audio_run.AudioRun.record`` folds them."""
        from extract.audio import SAMPLE_RATE

        return {
            "source": source,
            "frames": self.frames,
            "with_audio": self.with_audio,
            "audio_seconds": samples / SAMPLE_RATE,
            "video_seconds": float(video_seconds),
            "seconds": time.perf_counter() - started,
        }


class AudioPass:
    """The audio side of one video's decode pass (an ``extract.sources.AudioSink``).

    An audio stream that cannot be decoded, or an extractor that fails, ends the audio of this video
    only: :meth:`finish` returns its one-line error and the faces go on.
    """

    def __init__(self, task: AudioTask, path: str):
        from extract.audio import FramePool, Rows, audio_spec

        spec = audio_spec(task.name)
        self.path = path
        self.rows, self.pool = Rows(spec), FramePool(spec.dim)
        self.out = ShardOut(task.parts, task.subjects, task.meta, path)
        self.decoder = None
        self.error = ""
        self.samples = 0
        self.last = None  # the latest frame time
        self.seen = 0
        self.started = time.perf_counter()

    def open(self, stream) -> None:
        from extract.audio import AudioDecoder

        if stream is None:
            self.pool.audio_done()  # no audio stream: every frame is kept, without audio
        else:
            self.decoder = AudioDecoder()

    def packet(self, packet) -> None:
        if self.decoder is not None:
            self._guarded(lambda: self._pool(self.decoder.blocks(packet.decode())))

    def frame_at(self, seconds: float | None) -> None:
        if seconds is None:  # a frame without a timestamp: one frame step (30 fps) after the last
            seconds = (self.last or 0.0) + 1 / 30
        self.last = seconds = max(seconds, self.last if self.last is not None else seconds)
        self.pool.frames([seconds])
        self.seen += 1
        if self.seen % TAKE_EVERY == 0:
            self.out.add(*self.pool.take())

    def finish(self) -> dict:
        """Writes the rest and closes the shards; returns the counts, or ``{"error": ...}`` (shards dropped)."""
        if self.decoder is not None:
            self._guarded(lambda: self._pool(self.decoder.flush()))
        self._guarded(lambda: self.pool.add(*self.rows.finish()))
        self.pool.audio_done()
        self.pool.frames_done()
        if self.error:
            self.out.abort()
            return {"error": self.error, "source": self.path}
        self.out.add(*self.pool.take())
        self.out.close()
        first = self.pool.starts[0] if len(self.pool.starts) else self.pool.end
        return self.out.result(self.path, self.samples, self.pool.end - first, self.started)

    def abort(self) -> None:
        self.out.abort()

    def _pool(self, blocks) -> None:
        for start, block in blocks:
            self.samples += len(block)
            self.pool.add(*self.rows.add(start, block))

    def _guarded(self, step) -> None:
        """Runs ``step()`` unless this video's audio already failed; its error is kept, not raised."""
        from extract.audio import decode_error

        if self.error:
            return
        try:
            step()
        except av.error.FFmpegError as err:
            self.error = str(decode_error(self.path, err))
        except ValueError as err:  # an extractor's own one-line error (a missing optional package)
            self.error = f"{self.path}: {err}"
        if self.error:
            self.decoder = None
            self.pool.audio_done()
