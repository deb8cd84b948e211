#!/usr/bin/env python3
"""Link fidelity of the userspace and tc backends side by side, and namespace set-up cost.

    python benchmarks/link_backends.py [TOPOLOGY] [--devices 10,100,500]

1. For each device group of the topology (default topologies/smoke.yaml), known
   payloads go over the group's link with each available backend; the table
   prints expected (bytes/rate + delay) against measured time at the receiver.
2. How long one machine takes to set up and tear down N namespaced devices
   (namespace, veth pair, addresses, routes, tbf both ways), for several N.
Needs root for the tc half; without it only the userspace rows are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testbed.config.loading import load_topology  # noqa: E402
from testbed.run.linkcheck import available_backends, check_links, format_rows  # noqa: E402
from throttling.links import LinkBackend  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def setup_teardown(n: int) -> tuple[float, float]:
    from throttling.netns import DeviceLink, NetnsLayout, NetnsTopology, list_namespaces

    topo = NetnsTopology(NetnsLayout("bench", "10.76.0.0/16", n), [DeviceLink(5.85, 13.0)] * n)
    t0 = time.monotonic()
    topo.create()
    t1 = time.monotonic()
    topo.close()
    t2 = time.monotonic()
    assert not [x for x in list_namespaces() if x.startswith("splitbed-bench-")]
    return t1 - t0, t2 - t1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("topology", nargs="?", default=str(ROOT / "topologies/smoke.yaml"))
    ap.add_argument("--devices", default="10,100,500", help="namespaced device counts to set up")
    args = ap.parse_args()
    backends = available_backends()
    topo = load_topology(args.topology)
    print(f"== link fidelity per backend ({args.topology}; jitter off so the expectation is exact)")
    rows = check_links(topo, backends)
    print(format_rows(rows))
    for b in backends:
        errs = [abs(r.error_pct) for r in rows if r.backend == b.name]
        big = [abs(r.error_pct) for r in rows if r.backend == b.name and r.nbytes >= 100_000]
        print(f"{b.name:<10} |error| median {statistics.median(errs):.2f}%  max {max(errs):.2f}%  "
              f"(>= 100 KB: max {max(big):.2f}%)")
    if not any(b.name == "tc" for b in backends):
        print("tc backend not available here:", LinkBackend("userspace").describe())
        return 0
    print("\n== namespaced devices: set-up and tear-down time on this machine")
    print(f"{'devices':>8}{'set-up s':>10}{'tear-down s':>13}{'ms/device':>11}")
    for n in (int(x) for x in args.devices.split(",")):
        up, down = setup_teardown(n)
        print(f"{n:>8}{up:>10.2f}{down:>13.2f}{1000 * (up + down) / n:>11.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
