"""The small registry type that TASKS, MODELS, REBALANCE and the backbones use, and its error.

Example::

    MODELS = Registry("model", "--model / MODEL")
    MODELS.register("tcn", ModelSpec(...))
    MODELS["tcnn"]   # ConfigError: unknown model 'tcnn' (--model / MODEL); choose one of: tcn
"""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the setting and the valid values."""


class Registry(Generic[T]):
    """An ordered name -> entry table whose lookup error lists every valid name.

    Args:
        kind: what the entries are ("model", "task", ...), used in error messages.
        flag: the CLI flag (and make variable) that selects an entry.

    >>> r = Registry("colour", "--colour")
    >>> _ = r.register("red", 1)
    >>> r["red"], list(r), "blue" in r
    (1, ['red'], False)
    """

    def __init__(self, kind: str, flag: str):
        self.kind = kind
        self.flag = flag
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ConfigError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Removes an entry (tests that register a toy one clean up with it)."""
        self._entries.pop(name, None)

    def get(self, name: str, default: T | None = None) -> T | None:
        return self._entries.get(name, default)

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} '{name}' ({self.flag}); choose one of: {', '.join(self)}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self):
        return self._entries.items()
