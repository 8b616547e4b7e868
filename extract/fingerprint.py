"""A fingerprint of each video's source, stored with its cached rows, so a changed source is noticed.

For a video file: its size, modification time and a SHA-256 of its first and last 64 KiB. For a
folder of frames: the number of files, the folder's modification time (files added, removed or
renamed) and a SHA-256 over the name, size and modification time of every file. Both cost a stat or
a directory listing, never a decode, so every extraction run checks every cached video.

>>> import tempfile
>>> clip = Path(tempfile.mkdtemp()) / "clip.mp4"
>>> _ = clip.write_bytes(b"0" * 1000)
>>> before = fingerprint(clip)
>>> _ = clip.write_bytes(b"1" * 1000)
>>> fingerprint(clip) == before
False
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

EDGE = 64 * 1024


def fingerprint(path: str | Path) -> str:
    """The source's fingerprint as a JSON string; ``""`` for a path that no longer exists."""
    path = Path(path)
    try:
        if path.is_dir():
            return _folder(path)
        st = path.stat()
        digest = hashlib.sha256()
        with path.open("rb") as f:
            digest.update(f.read(EDGE))
            if st.st_size > EDGE:
                f.seek(max(st.st_size - EDGE, EDGE))
                digest.update(f.read(EDGE))
    except OSError:
        return ""
    return json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256_edges": digest.hexdigest()})


def _folder(path: Path) -> str:
    digest = hashlib.sha256()
    entries = sorted(os.scandir(path), key=lambda e: e.name)
    for entry in entries:
        st = entry.stat()
        digest.update(f"{entry.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return json.dumps(
        {"files": len(entries), "mtime_ns": path.stat().st_mtime_ns, "sha256_listing": digest.hexdigest()}
    )


def changed(stored: str, now: str) -> bool:
    """True when a source has a stored fingerprint (caches written before it had none) that differs."""
    return bool(stored) and stored != now
