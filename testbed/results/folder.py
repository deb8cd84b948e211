"""The run's output folder, written as the run goes.

`requests.csv` and `server_load.csv` are appended and flushed every time the
driver drains the actors (about once a second); `summary.json` is replaced
atomically, first as a partial summary and finally as the complete one, so an
interrupted run leaves readable files with everything measured so far.

A folder is never reused: `prepare_out` refuses one that holds an earlier run's
results, or that cannot be written, before the run starts (OutputError; exit 2
from run.py), and the CSV files are created exclusively, never truncated. A disk
that fills mid-run: the CSV keeps its rows up to the last complete flush (a half
written row is cut off), a small reserve file made at the start is given back so
the last summary.json can still say why the run stopped, and the error names the
file.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import math
import os
from pathlib import Path
from typing import Any

from testbed.results.metrics import LOAD_COLUMNS, REQUEST_COLUMNS

RESULT_FILES = ("summary.json", "requests.csv", "server_load.csv", "sweep.csv", "accuracy.csv")
RESERVE_BYTES = 1 << 20  # room for the last summary.json when the disk fills


class OutputError(OSError):
    """The output folder cannot be used or written; the message names the path and the cause."""


def prepare_out(out: Path, pick_new: bool = False) -> Path:
    """The folder a run writes to, created and known writable. An earlier run's results are never overwritten:
    OutputError, or with `pick_new` (the default, timestamped name) the next free `NAME-2`, `NAME-3`..."""
    base, n = out, 1
    while out.is_dir() and (held := [f for f in RESULT_FILES if (out / f).exists()]):
        if not pick_new:
            raise OutputError(f"{out}: holds an earlier run's results ({', '.join(held)}); nothing was overwritten. "
                              "Allowed: a new or empty folder")
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is not a folder; allowed: a new or empty folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"{out}: cannot write there: {e.strerror or e}") from None
    return out


class CsvLog:
    def __init__(self, path: Path, columns: tuple[str, ...]):
        self.path = path
        self.columns = columns
        self._file = _create(path)
        self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="raise")
        self.rows = 0
        self._good = 0  # bytes on disk up to the last complete flush
        self._broken = False
        self._flush(lambda: self._writer.writeheader())

    def append(self, rows: list[dict[str, Any]]) -> None:
        if not rows or self._broken:
            return
        self._flush(lambda: self._writer.writerows(rows))
        self.rows += len(rows)

    def _flush(self, write: Any) -> None:
        try:
            write()
            self._file.flush()
            self._good = self._file.tell()
        except OSError as e:  # a full disk: keep what was whole, name the file
            self._broken = True
            _drop(self._file)
            with _quiet():
                os.truncate(self.path, self._good)
            raise OutputError(f"{self.path}: cannot write: {e.strerror or e}") from None

    def close(self) -> None:
        if not self._broken:
            try:
                self._file.close()
            except OSError:
                _drop(self._file)


def _create(path: Path) -> Any:
    try:
        return path.open("x", newline="")  # exclusive: an existing file is never truncated
    except OSError as e:
        raise OutputError(f"{path}: cannot create: {e.strerror or e}") from None


def _drop(f: Any) -> None:
    """Close a file whose buffered data cannot be written, without writing it."""
    with _quiet():
        os.close(f.fileno())
    with _quiet():
        f.close()


def _quiet() -> contextlib.suppress:
    return contextlib.suppress(OSError, ValueError)


class RunFolder:
    def __init__(self, out_dir: Path):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.dir = out_dir
        self._reserve = out_dir / ".reserve"
        try:
            with self._reserve.open("wb") as f:
                f.write(b"\0" * RESERVE_BYTES)  # written, not sparse: the blocks are really held
        except OSError as e:
            raise OutputError(f"{self._reserve}: cannot write: {e.strerror or e}") from None
        self.requests = CsvLog(out_dir / "requests.csv", REQUEST_COLUMNS)
        self.server_load = CsvLog(out_dir / "server_load.csv", LOAD_COLUMNS)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        """summary.json, atomically; on a full disk the reserve is given back and the write tried once more."""
        path = self.dir / "summary.json"
        tmp = path.with_suffix(".json.tmp")
        text = json.dumps(_json_safe(summary), indent=2, sort_keys=False) + "\n"
        for attempt in range(2):
            try:
                tmp.write_text(text)
                os.replace(tmp, path)
                return path
            except OSError as e:
                if attempt or e.errno != errno.ENOSPC or not self._reserve.exists():
                    raise OutputError(f"{path}: cannot write: {e.strerror or e}") from None
                self._reserve.unlink()  # the freed blocks are back at once on a local file system
        return path

    def close(self) -> None:
        self.requests.close()
        self.server_load.close()
        with _quiet():
            self._reserve.unlink()


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
