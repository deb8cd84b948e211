"""Key paths, the way every error names a place in a topology: `devices[0].arrival.rate_hz`.

At the bottom because every layer's errors use them: the bounded YAML reader, trace files, the config checks.
"""

from __future__ import annotations

import re
from typing import Any

_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_key_path(path: str) -> list[str | int]:
    """`devices[0].arrival.rate_hz` -> ['devices', 0, 'arrival', 'rate_hz']."""
    parts: list[str | int] = []
    pos = 0
    for m in _PATH_TOKEN.finditer(path):
        gap = path[pos : m.start()]
        if gap not in ("", "."):
            raise ValueError(f"bad key path {path!r}")
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not parts or pos != len(path) or path.endswith("."):
        raise ValueError(f"bad key path {path!r}")
    return parts


_PLAIN_KEY = re.compile(r"[^.\[\]\s]+")


def format_key_path(parts: tuple[Any, ...] | list[Any]) -> str:
    """['devices', 0, 'rate_hz'] -> `devices[0].rate_hz`; a key a dotted path cannot spell (empty, with dots,
    brackets or spaces) is quoted, `cloud['a.b']`, so every problem still points at its key."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif _PLAIN_KEY.fullmatch(str(p)):
            out += f".{p}" if out else str(p)
        else:
            out += f"[{str(p)!r}]"
    return out
