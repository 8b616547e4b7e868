"""One config mechanism: frozen dataclasses, the shared fields in small bases, the CLI generated.

Every entry point (``python -m extract``, ``train``, ``finetune train|distill|joint``) describes its
settings as one frozen dataclass whose docstring's ``Args:`` section documents each field. The
command line is generated from it (:func:`add_fields`: one flag per field, typed and defaulted
from it, help from the docstring); the resolved config is what the run folder or cache summary
stores. Fields that several entry points share live once, in :class:`DataFields` and
:class:`RunFields`.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_fields(parser, RunFields)
>>> vars(parser.parse_args(["--seed", "3"]))["seed"]
3
>>> field_help(RunFields)["seed"][:5]
'seeds'
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

DEFAULT_BACKBONE = "fer"
NO_BACKBONE = "none"  # BACKBONE=none: no face embeddings (an audio-only extraction or model)


@dataclass(frozen=True)
class DataFields:
    """Which dataset, where it lives and where its feature caches are.

    Args:
        dataset: a name of ``data_manifests.loader.DATASETS`` (DATASET).
        data_root: where the dataset lives in its official layout (DATA_ROOT); empty: ``data/<dataset>``.
        cache_dir: CACHE_DIR, holding ``<dataset>/<backbone>.h5``.
    """

    dataset: str = "synthetic"
    data_root: str = ""
    cache_dir: str = "cache"

    def root(self) -> str:
        """``data_root``, or ``data/<dataset>`` when it is empty."""
        return self.data_root or f"data/{self.dataset}"


@dataclass(frozen=True)
class RunFields:
    """Where a training run goes and how it is seeded.

    Args:
        runs_dir: RUNS_DIR, where ``<run id>/`` is written.
        run_name: the run folder name; empty: a generated run id.
        seed: seeds Python, NumPy, the backend, sampling and rebalancing (SEED).
        verbose: Keras fit verbosity (0, 1, 2).
    """

    runs_dir: str = "runs"
    run_name: str = ""
    seed: int = 0
    verbose: int = 2


_ENTRY = re.compile(r"^(\s+)([a-z_][a-z0-9_]*(?:,\s*[a-z_][a-z0-9_]*)*):\s*(.*)$")
_INLINE = re.compile(r"(?<=\.)\s+([a-z_][a-z0-9_]*(?:,\s*[a-z_][a-z0-9_]*)*):\s")


def _args_section(doc: str) -> list[tuple[list[str], str]]:
    """``([names], text)`` per entry of a Google-style ``Args:`` section."""
    lines = doc.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:") + 1
    except StopIteration:
        return []
    entries: list[tuple[list[str], str]] = []
    indent = None
    for line in lines[start:]:
        if not line.strip():
            continue
        match = _ENTRY.match(line)
        depth = len(line) - len(line.lstrip())
        if match and (indent is None or depth == indent):
            indent = depth
            entries.append(([n.strip() for n in match.group(2).split(",")], match.group(3)))
        elif indent is not None and depth > indent and entries:
            names, text = entries[-1]
            entries[-1] = (names, f"{text} {line.strip()}")
        else:
            break
    return entries


def field_help(cls) -> dict[str, str]:
    """Field name -> its text in the ``Args:`` sections of ``cls`` and its bases (the subclass wins).

    A line documenting several fields (``cache_dir: CACHE_DIR. runs_dir: RUNS_DIR``) is split at
    each ``. <field>:``; ``epochs, batch_size: ...`` gives the text to each name.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for names, text in _args_section(klass.__dict__.get("__doc__") or ""):
            parts = _INLINE.split(text)
            chunks = [(names, parts[0])]
            for k in range(1, len(parts) - 1, 2):
                inline = [n.strip() for n in parts[k].split(",")]
                if all(n in fields for n in inline):
                    chunks.append((inline, parts[k + 1]))
                else:
                    chunks[-1] = (chunks[-1][0], f"{chunks[-1][1]}. {parts[k]}: {parts[k + 1]}")
            for chunk_names, chunk in chunks:
                for name in chunk_names:
                    out[name] = chunk.strip()
    return out


def _size(text: str) -> tuple:
    try:
        size = tuple(int(v) for v in text.split(",")) if text else ()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W,C such as 96,96,3; got {text!r}") from None
    if size and (len(size) != 3 or min(size) < 1):
        raise argparse.ArgumentTypeError(f"expected H,W,C such as 96,96,3; got {text!r}")
    return size


_TYPES = {"int": int, "float": float, "str": str, "tuple": _size}


def add_fields(
    parser: argparse.ArgumentParser, cls, skip: Iterable[str] = (), choices: Mapping[str, Iterable[str]] | None = None
) -> None:
    """One flag per field of the dataclass ``cls``: ``--<name-with-dashes>``, typed and defaulted from
    the field (``--x/--no-x`` for booleans, ``H,W,C`` for tuples), help from :func:`field_help`.

    Args:
        skip: fields without a flag. choices: field -> the values its flag accepts.
    """
    helps = field_help(cls)
    choices = choices or {}
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        text = helps.get(field.name, "").replace("%", "%%")
        default = field.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        kwargs = {"default": default, "help": f"{text} (default: {shown!r})".strip()}
        if field.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        kind = _TYPES[field.type if isinstance(field.type, str) else field.type.__name__]
        if kind is _size:
            kwargs["metavar"] = "H,W,C"
        if field.name in choices:
            kwargs["choices"] = list(choices[field.name])
        parser.add_argument(flag, type=kind, **kwargs)
