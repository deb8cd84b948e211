"""How every table here writes a number: a fixed number of digits, and "-" for a value that is missing or NaN."""

from __future__ import annotations

import math
from typing import Any


def fmt(x: Any, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)
