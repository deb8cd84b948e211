"""Device populations: each device of a group drawn from distributions, or read from a CSV row.

A group's `population` gives every device its own compute time (ms per full-model inference, the
absolute profile the pools already know as `full_model_ms`), uplink and downlink rate (kbit/s), instead
of one class-wide figure. Either seeded distributions:

    population: {seed: 3, compute_ms: {dist: lognormal, median: 150, sigma: 0.4},
                 uplink_kbps: {dist: lognormal, median: 5000, sigma: 0.8}}

or a CSV with one row per device (`device,compute_ms,uplink_kbps,downlink_kbps`, and optionally
`offline_s`: `start-end;start-end` seconds of each phase when the device is away and generates no frames;
the group's count rows are used in order). A value a population leaves out keeps the class's or the network's figure.
A drawn population's availability is an alternating renewal process, the same `offline_s` intervals a CSV gives:

    availability: {on_s: {dist: lognormal, median: 30, sigma: 0.5}, off_s: {dist: uniform, low: 5, high: 20},
                   start: random}

Pure functions of the config: the driver, the pools and the tests draw the same values.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from testbed.base.files import MAX_POPULATION_BYTES, file_problem

MAX_AVAILABILITY_PERIODS = 1_000_000  # drawn on/off periods of one population group (about a second to draw)

CSV_COLUMNS = ("device", "compute_ms", "uplink_kbps", "downlink_kbps")
FIELDS = ("compute_ms", "uplink_kbps", "downlink_kbps")


class Distribution(BaseModel):
    """lognormal: exp(N(ln median, sigma)); normal: N(mean, sd) cut at `low`; uniform: [low, high]."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    dist: Literal["lognormal", "normal", "uniform"]
    median: Annotated[float, Field(gt=0)] | None = None
    sigma: Annotated[float, Field(ge=0)] | None = None
    mean: float | None = None
    sd: Annotated[float, Field(ge=0)] | None = None
    low: Annotated[float, Field(gt=0)] | None = None
    high: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _params(self) -> Distribution:
        needs = {"lognormal": ("median", "sigma"), "normal": ("mean", "sd", "low"), "uniform": ("low", "high")}
        missing = [k for k in needs[self.dist] if getattr(self, k) is None]
        if missing:
            raise ValueError(f"{self.dist} needs {', '.join(needs[self.dist])} (missing {', '.join(missing)})")
        if self.dist == "uniform" and self.high is not None and self.low is not None and self.high < self.low:
            raise ValueError("uniform needs low <= high")
        return self

    def draw(self, rng: random.Random) -> float:
        if self.dist == "lognormal":
            return float(self.median) * math.exp(rng.gauss(0.0, float(self.sigma)))  # type: ignore[arg-type]
        if self.dist == "normal":
            return max(float(self.low), rng.gauss(float(self.mean), float(self.sd)))  # type: ignore[arg-type]
        return rng.uniform(float(self.low), float(self.high))  # type: ignore[arg-type]


class Availability(BaseModel):
    """Alternating on (available) and off (away: no frames) periods, each drawn from its distribution, per
    device over the phase (warm-up included). `start`: the state at the phase's start; `random` starts at a
    uniformly drawn point of the device's first on+off cycle, so devices are not in step."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    on_s: Distribution
    off_s: Distribution
    start: Literal["on", "off", "random"] = "on"


class Population(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    seed: int = 0
    csv: str | None = None
    compute_ms: Distribution | None = None
    uplink_kbps: Distribution | None = None
    downlink_kbps: Distribution | None = None
    availability: Availability | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Population:
        drawn = [k for k in (*FIELDS, "availability") if getattr(self, k) is not None]
        if self.csv is not None and drawn:
            raise ValueError(f"give either csv or distributions ({', '.join(drawn)}), not both")
        if self.csv is None and not drawn:
            raise ValueError("needs csv or at least one of compute_ms, uplink_kbps, downlink_kbps, availability")
        return self


@dataclass(frozen=True)
class DeviceDraw:
    """One device's own values; None keeps the class's / network's figure."""

    compute_ms: float | None
    uplink_kbps: float | None
    downlink_kbps: float | None
    offline_s: tuple[tuple[float, float], ...] = ()  # [start, end) on each phase's clock: the device is away


class PopulationCsvError(ValueError):
    """A bad population CSV; the message names the file, the line and the column."""


class AvailabilityError(ValueError):
    """Drawn availability that would need more on/off periods than a run can hold."""


def draws(pop: Population, count: int, group: str, horizon_s: float) -> list[DeviceDraw]:
    """The group's devices' values, in device order (seeded per group and field, so adding a field to the
    population does not move the others' draws). `horizon_s`: the phase's length, warm-up included, over
    which availability is drawn."""
    if pop.csv is not None:
        rows = read_csv(Path(pop.csv))
        if len(rows) < count:
            raise PopulationCsvError(f"{pop.csv}: {len(rows)} device rows, the group has {count} devices")
        return rows[:count]
    columns = {}
    for name in FIELDS:
        d: Distribution | None = getattr(pop, name)
        rng = random.Random(f"{pop.seed}:{group}:{name}")
        columns[name] = [None if d is None else round(d.draw(rng), 3) for _ in range(count)]
    offline: list[tuple[tuple[float, float], ...]] = [()] * count
    if pop.availability is not None:
        budget = [MAX_AVAILABILITY_PERIODS]  # for the whole group, so the draw ends within seconds
        offline = [offline_periods(pop.availability, horizon_s,
                                   random.Random(f"{pop.seed}:{group}:availability:{i}"), budget)
                   for i in range(count)]
    return [DeviceDraw(columns["compute_ms"][i], columns["uplink_kbps"][i], columns["downlink_kbps"][i], offline[i])
            for i in range(count)]


def offline_periods(av: Availability, horizon_s: float, rng: random.Random,
                    budget: list[int]) -> tuple[tuple[float, float], ...]:
    """One device's off periods as `offline_s` intervals [start, end) in [0, horizon_s), rounded to the ms (an
    interval that rounds to nothing is dropped). `budget`: on and off periods left to the group; spent here."""
    if av.start == "random":
        first_on, first_off = av.on_s.draw(rng), av.off_s.draw(rng)
        u = rng.uniform(0.0, first_on + first_off)
        on, left = (True, first_on - u) if u < first_on else (False, first_on + first_off - u)
    else:
        on = av.start == "on"
        left = (av.on_s if on else av.off_s).draw(rng)
    out: list[tuple[float, float]] = []
    t = 0.0
    while t < horizon_s:
        budget[0] -= 1
        if budget[0] < 0:
            raise AvailabilityError(f"more than {MAX_AVAILABILITY_PERIODS} on/off periods in the group over "
                                    f"{horizon_s:g} s; allowed: longer periods or fewer devices")
        end = min(t + left, horizon_s)
        if not on and round(end, 3) > round(t, 3):
            out.append((round(t, 3), round(end, 3)))
        t, on = end, not on
        left = (av.on_s if on else av.off_s).draw(rng)
    return tuple(out)


def read_csv(path: Path) -> list[DeviceDraw]:
    """Rows of a population CSV, checked: every column present, every value a positive number (a
    rate of 0 is an outage, which is a fault, not a device)."""
    if problem := file_problem(str(path), MAX_POPULATION_BYTES):  # a FIFO would block the reader forever
        raise PopulationCsvError(f"{path}: {problem}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise PopulationCsvError(f"{path}: cannot be read: {getattr(e, 'strerror', None) or e}") from None
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise PopulationCsvError(f"{path}:1: missing column(s) {', '.join(missing)}; "
                                 f"the columns are {', '.join(CSV_COLUMNS)}")
    out = []
    for line, row in enumerate(reader, start=2):
        values = []
        for col in FIELDS:
            cell = (row.get(col) or "").strip()
            try:
                v = float(cell)
            except ValueError:
                raise PopulationCsvError(f"{path}:{line}: column {col}: not a number (got {cell!r})") from None
            if not v > 0 or math.isinf(v):
                raise PopulationCsvError(f"{path}:{line}: column {col}: must be a positive number (got {cell})")
            values.append(v)
        out.append(DeviceDraw(values[0], values[1], values[2],
                              _intervals(path, line, (row.get("offline_s") or "").strip())))
    if not out:
        raise PopulationCsvError(f"{path}: no device rows")
    return out


def _intervals(path: Path, line: int, cell: str) -> tuple[tuple[float, float], ...]:
    """`offline_s`: `start-end` pairs (s from the phase's start, warm-up included) separated by `;`, in order and
    not overlapping; empty: always available."""
    out: list[tuple[float, float]] = []
    for part in filter(None, (p.strip() for p in cell.split(";"))):
        a, sep, b = part.partition("-")
        try:
            start, end = float(a), float(b)
        except ValueError:
            start = end = math.nan
        where = f"{path}:{line}: column offline_s: {part!r}"
        if not sep or math.isnan(start) or math.isnan(end) or not 0 <= start < end:
            raise PopulationCsvError(f"{where}: expected start-end seconds with 0 <= start < end")
        if out and start < out[-1][1]:
            raise PopulationCsvError(f"{where}: overlaps or precedes the interval before it "
                                     f"({out[-1][0]:g}-{out[-1][1]:g}); give intervals in order, not overlapping")
        out.append((start, end))
    return tuple(out)
