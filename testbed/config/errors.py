"""A topology's problems: each names the key path, what is wrong and the value; ConfigError lists them all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    value: Any = None
    has_value: bool = False

    def render(self, file: str) -> str:
        got = f" (got {self.value!r})" if self.has_value else ""
        return f"{file}: {self.path or '<top level>'}: {self.message}{got}"


class ConfigError(Exception):
    """A topology that cannot run; `str()` lists every problem, one per line."""

    def __init__(self, file: str, problems: list[Problem]):
        self.file = file
        self.problems = problems
        super().__init__("\n".join(p.render(file) for p in problems))
