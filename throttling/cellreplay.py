"""Workload-aware trace replay: a base delay that follows a trace, and CellReplay's light/heavy opportunity pair.

A Mahimahi trace is recorded by a saturating sender: every packet of a replayed flow gets the delivery
opportunities a long, heavy flow saw, after a fixed propagation delay. CellReplay (Sentosa et al., NSDI'25;
github.com/williamsentosa95/cellreplay, src/frontend/cellular_queue.cc) shows this is optimistic for short
bursts: a burst that starts on an idle link gets fewer, later opportunities (the *light* PDOs, recorded with
packet trains), and the base delay varies over time. Split-computing requests are such bursts.

Formats (text, one record per line, times in ms):

- delay trace: `t_ms delay_ms`, t non-decreasing, delay >= 0, at least two lines; the one-way base delay at any
  time is interpolated linearly between lines, and the trace loops with the period of its last t;
- light trace (CellReplay's "packet train" file, e.g. `up-delay-light-pdo`): `t_ms base_delay_ms pdo_ms ...`:
  from time t a burst's first packet takes base_delay_ms, and its k-th packet (1500-byte opportunity) is
  delivered pdo_ms[k] after the burst started (plus the base delay); at least three lines;
- heavy trace: a Mahimahi trace (CellReplay's `up-pdo`), used once a burst has outrun its light PDOs.

The switch rule is CellReplay's: a packet starts a new burst (light PDOs, a fresh base delay) when it would be
released more than `long_to_short_ms` after the link's last release (the link has drained); otherwise it takes
the burst's next light opportunity, and past the last one it queues for the heavy trace's opportunities. Pure:
the serializer maps (size, time ready) to the time the packet leaves the far end, delay included.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from testbed.base.files import MAX_TRACE_BYTES, file_problem
from throttling.trace import OPPORTUNITY_BYTES, MahimahiTrace, TraceError, TraceSerializer


def _rows(path: str, min_cols: int, min_rows: int) -> list[list[float]]:
    """Numeric rows of a whitespace-separated trace, validated: non-decreasing first column, no negatives."""

    if (problem := file_problem(path, MAX_TRACE_BYTES)) is not None:  # never open a FIFO or /dev/zero
        raise TraceError(f"{path}: cannot read: {problem}")
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise TraceError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from e
    rows: list[list[float]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        try:
            row = [float(x) for x in line.split()]
        except ValueError:
            raise TraceError(f"{path}: line {lineno}: not numbers: {line.strip()!r}") from None
        if len(row) < min_cols:
            raise TraceError(f"{path}: line {lineno}: needs at least {min_cols} columns, got {len(row)}")
        if any(x < 0 for x in row):
            raise TraceError(f"{path}: line {lineno}: negative value (times and delays are >= 0)")
        if rows and row[0] < rows[-1][0]:
            raise TraceError(f"{path}: line {lineno}: time {row[0]:g} is before the previous line's "
                             f"({rows[-1][0]:g}); times must not decrease")
        rows.append(row)
    if len(rows) < min_rows:
        raise TraceError(f"{path}: needs at least {min_rows} lines, got {len(rows)}")
    if rows[-1][0] <= rows[0][0]:
        raise TraceError(f"{path}: the trace must last a nonzero time")
    return rows


@dataclass(frozen=True)
class DelayTrace:
    """One-way base delay over time (ms), interpolated between samples, looping."""

    path: str
    times_ms: tuple[float, ...] = field(repr=False)
    delays_ms: tuple[float, ...] = field(repr=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DelayTrace:
        return _load_delay(os.fspath(path))

    @property
    def period_ms(self) -> float:
        return self.times_ms[-1] - self.times_ms[0]

    def delay_ms(self, t_ms: float) -> float:
        ts, ds = self.times_ms, self.delays_ms
        t = ts[0] + (t_ms % self.period_ms)
        i = max(0, min(bisect.bisect_right(ts, t) - 1, len(ts) - 2))
        span = ts[i + 1] - ts[i]
        frac = (t - ts[i]) / span if span > 0 else 0.0
        return ds[i] + frac * (ds[i + 1] - ds[i])


@functools.lru_cache(maxsize=32)
def _load_delay(path: str) -> DelayTrace:
    rows = _rows(path, 2, 2)
    return DelayTrace(path, tuple(r[0] for r in rows), tuple(r[1] for r in rows))


@dataclass(frozen=True)
class LightTrace:
    """CellReplay's packet-train trace: per time, the base delay and the light PDOs of a burst starting then."""

    path: str
    times_ms: tuple[float, ...] = field(repr=False)
    delays_ms: tuple[float, ...] = field(repr=False)
    pdos_ms: tuple[tuple[float, ...], ...] = field(repr=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LightTrace:
        return _load_light(os.fspath(path))

    def burst_at(self, t_ms: float) -> tuple[float, tuple[float, ...]]:
        """(base delay ms, light PDOs ms) of a burst starting at trace time `t_ms` (looping): CellReplay takes
        the PDOs of the line in force and interpolates the base delay towards the next line."""
        ts = self.times_ms
        t = ts[0] + (t_ms % (ts[-1] - ts[0]))
        i = max(0, min(bisect.bisect_right(ts, t) - 1, len(ts) - 2))
        span = ts[i + 1] - ts[i]
        frac = (t - ts[i]) / span if span > 0 else 0.0
        return self.delays_ms[i] + frac * (self.delays_ms[i + 1] - self.delays_ms[i]), self.pdos_ms[i]


@functools.lru_cache(maxsize=32)
def _load_light(path: str) -> LightTrace:
    rows = _rows(path, 2, 3)
    return LightTrace(path, tuple(r[0] for r in rows), tuple(r[1] for r in rows),
                      tuple(tuple(sorted(r[2:])) for r in rows))


class CellReplaySerializer:
    """Light PDOs for a burst that starts on a drained link, the heavy (Mahimahi) trace after them."""

    def __init__(self, light: LightTrace, heavy: MahimahiTrace, t0: float, offset_ms: float = 0.0,
                 long_to_short_ms: float = 0.0):
        self.light, self.t0, self.offset_ms = light, t0, offset_ms
        self.heavy = TraceSerializer(heavy, t0, offset_ms)
        self.long_to_short_s = long_to_short_ms / 1000.0
        self._last_release = -float("inf")
        self._burst_start, self._base_s = 0.0, 0.0
        self._pdos: tuple[float, ...] = ()
        self._index, self._left = 0, OPPORTUNITY_BYTES

    def depart(self, size: int, t_ready: float) -> float:
        """When the packet leaves the far end of the link (its base delay included)."""
        if t_ready + self._base_s > self._last_release + self.long_to_short_s:  # the link drained: a new burst
            base_ms, self._pdos = self.light.burst_at(self.offset_ms + (t_ready - self.t0) * 1000.0)
            self._burst_start, self._base_s = t_ready, base_ms / 1000.0
            self._index, self._left = 0, OPPORTUNITY_BYTES - size
            release = t_ready + self._base_s
        else:
            elapsed_ms = (t_ready - self._burst_start) * 1000.0
            while self._index < len(self._pdos) and elapsed_ms > self._pdos[self._index]:
                self._index, self._left = self._index + 1, OPPORTUNITY_BYTES
            if self._left < size:
                self._index, self._left = self._index + 1, OPPORTUNITY_BYTES
            self._left -= size
            if self._index < len(self._pdos):  # a light opportunity
                release = self._burst_start + self._base_s + self._pdos[self._index] / 1000.0
            else:  # past the light PDOs: the heavy trace's opportunities, after the base delay
                last_light = self._pdos[-1] / 1000.0 if self._pdos else 0.0
                release = self.heavy.depart(size, t_ready + max(self._base_s, last_light))
        self._last_release = max(self._last_release, release)
        return self._last_release


def convert(light_src: str, heavy_src: str, out_dir: str, name: str = "up") -> tuple[Path, Path]:
    """CellReplay's `<dir>-delay-light-pdo` and `<dir>-pdo` files -> `<name>.light` and `<name>.heavy` in
    `out_dir`, each validated (times rebased to start at 0; CellReplay's own files are already this format)."""
    light = LightTrace.load(light_src)
    MahimahiTrace.load(heavy_src)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = light.times_ms[0]
    lines = [" ".join(f"{x:g}" for x in (t - t0, d, *p)) for t, d, p in zip(light.times_ms, light.delays_ms,
                                                                             light.pdos_ms, strict=True)]
    light_out, heavy_out = out / f"{name}.light", out / f"{name}.heavy"
    light_out.write_text("\n".join(lines) + "\n")
    shutil.copyfile(heavy_src, heavy_out)
    return light_out, heavy_out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m throttling.cellreplay",
                                description="convert one direction of a CellReplay trace for splitbed")
    p.add_argument("light", help="CellReplay packet-train file, e.g. traces/tmobile/driving/up-delay-light-pdo")
    p.add_argument("heavy", help="CellReplay heavy PDO file (Mahimahi format), e.g. traces/tmobile/driving/up-pdo")
    p.add_argument("out_dir")
    p.add_argument("--name", default="up", help="output base name (default: up)")
    args = p.parse_args(argv)
    try:
        for path in convert(args.light, args.heavy, args.out_dir, args.name):
            print(path)
    except TraceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
