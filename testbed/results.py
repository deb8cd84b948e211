"""The run's output folder, written as the run goes.

`requests.csv` and `server_load.csv` are appended and flushed every time the
driver drains the actors (about once a second); `summary.json` is replaced
atomically, first as a partial summary and finally as the complete one, so an
interrupted run leaves readable files with everything measured so far.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from testbed.metrics import LOAD_COLUMNS, REQUEST_COLUMNS


class CsvLog:
    def __init__(self, path: Path, columns: tuple[str, ...]):
        self.path = path
        self.columns = columns
        self._file = path.open("w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="raise")
        self._writer.writeheader()
        self._file.flush()
        self.rows = 0

    def append(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self._writer.writerows(rows)
        self._file.flush()
        self.rows += len(rows)

    def close(self) -> None:
        self._file.close()


class RunFolder:
    def __init__(self, out_dir: Path):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.dir = out_dir
        self.requests = CsvLog(out_dir / "requests.csv", REQUEST_COLUMNS)
        self.server_load = CsvLog(out_dir / "server_load.csv", LOAD_COLUMNS)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        path = self.dir / "summary.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(_json_safe(summary), indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)
        return path

    def close(self) -> None:
        self.requests.close()
        self.server_load.close()


def read_summary(folder: Path, needs: str) -> dict[str, Any] | None:
    """A results folder's summary.json (None when there is none); ValueError, naming the file, when it cannot
    be read or has no `needs` mapping."""
    path = folder / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot be read: {e}") from None
    if not isinstance(summary, dict) or not isinstance(summary.get(needs), dict):
        raise ValueError(f"{path}: not a splitbed summary (no {needs})")
    return summary


def read_rows(path: Path) -> list[dict[str, Any]]:
    """A CSV this folder wrote, with values typed back (empty -> None, True/False, int, float), so readers
    (the reports) see what the driver held; a missing file reads as no rows (a run stopped before it)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [{k: _typed(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _typed(text: str | None) -> Any:
    if text is None or text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _json_safe(obj: Any) -> Any:
    """NaN is not JSON: write null instead, so any JSON reader can load the summary."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else round(obj, 4)
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj
