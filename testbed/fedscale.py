"""FedScale's device capacity trace -> a population CSV (testbed/population.py), from a file you have.

    python -m testbed.fedscale client_device_capacity pop.csv --count 100 --seed 1 --compute-scale 1.0

FedScale's capacity trace maps a client id to `{'computation': ms, 'communication': kbit/s}` (FedScale's
docs, "Device Trace File Formats"). `communication` is one rate, so it is written as both the uplink and
the downlink. `computation` is FedScale's time for its own workload, not a ResNet-50 inference, so
`--compute-scale` (an assumption you choose; 1.0 by default) turns it into `compute_ms`.

The file is a Python pickle. It is read with an unpickler that refuses every class and function (only
dicts, lists, numbers and strings load), so a file that tries to run code fails instead of running it;
the command says that it unpickles. A JSON file with the same mapping needs no unpickling at all.
FedScale's availability trace (`client_behave_trace`) is not converted yet into the CSV's `offline_s`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import pickle
import random
import sys
from pathlib import Path
from typing import Any


class TraceError(ValueError):
    """A capacity file that cannot be converted; the message names the file and the client."""


class _DataOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: only plain data is read from a trace")


def load_capacity(path: Path) -> dict[str, dict[str, float]]:
    """client id -> {'computation', 'communication'}; JSON as is, a pickle through the data-only unpickler."""
    data = path.read_bytes()
    try:
        raw = json.loads(data) if path.suffix == ".json" else _DataOnly(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, ValueError, EOFError) as e:
        raise TraceError(f"{path}: not a FedScale capacity trace: {e}") from None
    if not isinstance(raw, dict) or not raw:
        raise TraceError(f"{path}: expected a mapping of client id -> {{computation, communication}}")
    return {str(k): v for k, v in raw.items()}


def to_rows(capacity: dict[str, dict[str, float]], count: int | None, seed: int, compute_scale: float,
            source: str) -> list[dict[str, Any]]:
    """count clients drawn without replacement (seeded; all of them, in id order, without count)."""
    ids = sorted(capacity)
    if count is not None:
        if count > len(ids):
            raise TraceError(f"{source}: {len(ids)} clients, {count} asked for")
        ids = random.Random(seed).sample(ids, count)
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
        w = csv.DictWriter(f, fieldnames=["device", "compute_ms", "uplink_kbps", "downlink_kbps", "fedscale_client"])
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed.fedscale", description=__doc__.split("\n\n")[0])
    p.add_argument("capacity", type=Path, help="FedScale's client_device_capacity (pickle) or the same as .json")
    p.add_argument("out", type=Path, help="population CSV to write")
    p.add_argument("--count", type=int, help="clients to draw (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compute-scale", type=float, default=1.0,
                   help="compute_ms = computation x this (FedScale's workload is not a ResNet-50 inference)")
    args = p.parse_args(argv)
    if args.capacity.suffix != ".json":
        print(f"unpickling {args.capacity} with a data-only unpickler (classes and functions are refused)",
              file=sys.stderr)
    try:
        rows = to_rows(load_capacity(args.capacity), args.count, args.seed, args.compute_scale, str(args.capacity))
    except (OSError, TraceError) as e:
        print(f"fedscale: {e}", file=sys.stderr)
        return 2
    write_csv(rows, args.out)
    print(f"{args.out}: {len(rows)} devices from {args.capacity}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
