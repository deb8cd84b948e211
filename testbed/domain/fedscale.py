"""FedScale's device capacity and behaviour traces -> a population CSV (testbed/domain/population.py),
from files you have.

    python -m testbed.domain.fedscale client_device_capacity pop.csv --count 100 --seed 1 --compute-scale 1.0 \
        --behaviour client_behave_trace --behaviour-scale 0.001

FedScale's capacity trace maps a client id to `{'computation': ms, 'communication': kbit/s}` (FedScale's
docs, "Device Trace File Formats"). `communication` is one rate, so it is written as both the uplink and
the downlink. `computation` is FedScale's time for its own workload, not a ResNet-50 inference, so
`--compute-scale` (an assumption you choose; 1.0 by default) turns it into `compute_ms`.

The file is a Python pickle. It is read with an unpickler that refuses every class and function (only
dicts, lists, numbers and strings load), so a file that tries to run code fails instead of running it;
the command says that it unpickles. A JSON file with the same mapping needs no unpickling at all.

FedScale's behaviour trace (`client_behave_trace`) maps a client id to `{'active': [s], 'inactive': [s],
'finish_time': s, ...}`: the client is available from active[i] to inactive[i], and the trace repeats every
finish_time seconds. Its gaps become the CSV's `offline_s`, times x `--behaviour-scale` (phase seconds per
FedScale second: your assumption, FedScale's trace spans days and a phase seconds), repeated up to
`--horizon-s` (one trace period by default). Clients are joined with the capacity file by client id, or
(`--behaviour-join position`) by position, as FedScale's client manager pairs them: the k-th device takes the
k-th trace in file order, modulo the number of traces.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import pickle
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_INTERVALS = 100_000  # offline_s intervals of one client (a CSV cell of about a megabyte)


class TraceError(ValueError):
    """A capacity file that cannot be converted; the message names the file and the client."""


class _DataOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: only plain data is read from a trace")


def load_capacity(path: Path) -> dict[str, dict[str, float]]:
    """client id -> {'computation', 'communication'}; JSON as is, a pickle through the data-only unpickler."""
    return _load_mapping(path, "capacity", "{computation, communication}")


def load_behaviour(path: Path) -> dict[str, dict[str, Any]]:
    """client id -> {'active', 'inactive', 'finish_time', ...}, read as load_capacity reads, file order kept."""
    return _load_mapping(path, "behaviour", "{active, inactive, finish_time}")


def _load_mapping(path: Path, kind: str, value: str) -> dict[str, Any]:
    data = path.read_bytes()
    try:
        raw = json.loads(data) if path.suffix == ".json" else _DataOnly(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, ValueError, EOFError) as e:
        raise TraceError(f"{path}: not a FedScale {kind} trace: {e}") from None
    if not isinstance(raw, dict) or not raw:
        raise TraceError(f"{path}: expected a mapping of client id -> {value}")
    return {str(k): v for k, v in raw.items()}


@dataclass(frozen=True)
class Behaviour:
    """A behaviour trace and how it maps onto a phase: seconds x scale, repeated up to horizon_s."""

    trace: dict[str, dict[str, Any]]
    source: str
    scale: float = 1.0
    horizon_s: float | None = None  # None: one trace period
    join: str = "id"  # id | position


def _seconds(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < float("inf"):
        raise ValueError
    return float(v)


def offline_intervals(entry: Any, cid: str, b: Behaviour) -> list[tuple[float, float]]:
    """The gaps between one client's active periods as offline_s intervals on the phase's clock."""
    where = f"{b.source}: client {cid}"
    try:
        active, inactive = [_seconds(v) for v in entry["active"]], [_seconds(v) for v in entry["inactive"]]
        finish = _seconds(entry["finish_time"])
    except (KeyError, TypeError, ValueError):
        raise TraceError(f"{where}: needs 'active' and 'inactive' lists and 'finish_time', seconds >= 0") from None
    if not active or len(active) != len(inactive):
        raise TraceError(f"{where}: {len(active)} active and {len(inactive)} inactive times; "
                         "expected as many of each, at least one")
    periods = list(zip(active, inactive, strict=True))
    for i, (a, e) in enumerate(periods):
        if e < a:
            raise TraceError(f"{where}: active period {i} is reversed ({a:g} to {e:g})")
        if i and a < periods[i - 1][1]:
            raise TraceError(f"{where}: active period {i} ({a:g} to {e:g}) overlaps or precedes the one before "
                             f"({periods[i - 1][0]:g} to {periods[i - 1][1]:g})")
    if finish < periods[-1][1]:
        raise TraceError(f"{where}: finish_time {finish:g} is before the last active period ends "
                         f"({periods[-1][1]:g})")
    gaps = [(s, e) for s, e in zip([0.0] + inactive, active + [finish], strict=True) if e > s]
    horizon = finish * b.scale if b.horizon_s is None else b.horizon_s
    repeats = int(horizon // (finish * b.scale)) + 1 if finish > 0 else 1
    if repeats * len(gaps) > MAX_INTERVALS:
        raise TraceError(f"{where}: {repeats} trace periods of {len(gaps)} gaps up to {horizon:g} s; allowed: at "
                         f"most {MAX_INTERVALS} intervals (a larger --behaviour-scale or a shorter --horizon-s)")
    out: list[tuple[float, float]] = []
    for k in range(repeats):
        for s, e in gaps:
            lo, hi = round((s + k * finish) * b.scale, 3), round(min((e + k * finish) * b.scale, horizon), 3)
            if hi > lo and lo < horizon:
                if out and lo <= out[-1][1]:  # the last gap of one period runs into the first of the next
                    out[-1] = (out[-1][0], hi)
                else:
                    out.append((lo, hi))
    return out


def offline_cell(intervals: list[tuple[float, float]]) -> str:
    """`start-end;...` as the population CSV reads it (no exponent, so '-' only separates)."""
    def num(x: float) -> str:
        return f"{x:.3f}".rstrip("0").rstrip(".")
    return ";".join(f"{num(a)}-{num(b)}" for a, b in intervals)


def to_rows(capacity: dict[str, dict[str, float]], count: int | None, seed: int, compute_scale: float,
            source: str, behaviour: Behaviour | None = None) -> list[dict[str, Any]]:
    """count clients drawn without replacement (seeded; all of them, in id order, without count); with a
    behaviour trace, each one's offline_s from it."""
    ids = sorted(capacity)
    if count is not None:
        if count > len(ids):
            raise TraceError(f"{source}: {len(ids)} clients, {count} asked for")
        ids = random.Random(seed).sample(ids, count)
    rows = _capacity_rows(capacity, ids, compute_scale, source)
    if behaviour is not None:
        keys = list(behaviour.trace)
        paired = ids if behaviour.join == "id" else [keys[i % len(keys)] for i in range(len(ids))]
        missing = [cid for cid in paired if cid not in behaviour.trace]
        if missing:
            raise TraceError(f"{behaviour.source}: {len(missing)} of {len(ids)} clients have no behaviour trace "
                             f"(first: {', '.join(missing[:5])}); --behaviour-join position pairs them as "
                             "FedScale does")
        for row, cid in zip(rows, paired, strict=True):
            row["offline_s"] = offline_cell(offline_intervals(behaviour.trace[cid], cid, behaviour))
            row["fedscale_behaviour_client"] = cid
    return rows


def _capacity_rows(capacity: dict[str, dict[str, float]], ids: list[str], compute_scale: float,
                   source: str) -> list[dict[str, Any]]:
    rows = []
    for i, cid in enumerate(ids):
        c = capacity[cid]
        try:
            comp, comm = float(c["computation"]), float(c["communication"])
        except (KeyError, TypeError, ValueError):
            raise TraceError(f"{source}: client {cid}: needs numeric 'computation' and 'communication'") from None
        if comp <= 0 or comm <= 0:
            raise TraceError(f"{source}: client {cid}: computation and communication must be > 0")
        rows.append({"device": i, "compute_ms": round(comp * compute_scale, 3), "uplink_kbps": round(comm, 3),
                     "downlink_kbps": round(comm, 3), "fedscale_client": cid})
    return rows


def write_csv(rows: list[dict[str, Any]], out: Path) -> None:
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed.domain.fedscale", description=__doc__.split("\n\n")[0])
    p.add_argument("capacity", type=Path, help="FedScale's client_device_capacity (pickle) or the same as .json")
    p.add_argument("out", type=Path, help="population CSV to write")
    p.add_argument("--count", type=int, help="clients to draw (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compute-scale", type=float, default=1.0,
                   help="compute_ms = computation x this (FedScale's workload is not a ResNet-50 inference)")
    p.add_argument("--behaviour", type=Path, help="FedScale's client_behave_trace (pickle) or the same as .json: "
                   "its inactive gaps become offline_s")
    p.add_argument("--behaviour-scale", type=float, default=1.0,
                   help="phase seconds per FedScale second (your assumption; FedScale's trace spans days)")
    p.add_argument("--horizon-s", type=float, help="repeat the trace up to this phase time (default: one period)")
    p.add_argument("--behaviour-join", choices=("id", "position"), default="id",
                   help="pair with the capacity clients by client id, or by position as FedScale does")
    args = p.parse_args(argv)
    if not args.behaviour_scale > 0 or (args.horizon_s is not None and not args.horizon_s > 0):
        p.error("--behaviour-scale and --horizon-s must be > 0")
    for path in (args.capacity, args.behaviour):
        if path is not None and path.suffix != ".json":
            print(f"unpickling {path} with a data-only unpickler (classes and functions are refused)",
                  file=sys.stderr)
    try:
        behaviour = None if args.behaviour is None else Behaviour(
            load_behaviour(args.behaviour), str(args.behaviour), args.behaviour_scale, args.horizon_s,
            args.behaviour_join)
        rows = to_rows(load_capacity(args.capacity), args.count, args.seed, args.compute_scale, str(args.capacity),
                       behaviour)
    except (OSError, TraceError) as e:
        print(f"fedscale: {e}", file=sys.stderr)
        return 2
    write_csv(rows, args.out)
    print(f"{args.out}: {len(rows)} devices from {args.capacity}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
