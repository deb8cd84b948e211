#!/usr/bin/env python3
"""Start-up cost of a model's cut catalogue and calibration (target: efficientnet_b0 at 224 px in at most 10 s).

    python benchmarks/catalogue_startup.py [ARCH ...] [--size 224]

Per arch: building the network (seeded random init), tracing it and finding every valid cut
(`build_catalogue`: one shape/FLOPs pass), and timing every cut at once (`cumulative_ms`: one warm-up and
five timed forward passes, each node timed as the graph runs). The calibration a device pool and a CPU
replica do at start is this one pass, however many cuts the catalogue holds; the old way (one head per cut,
seven runs each) is timed beside it for the natural bottlenecks, the cuts `policy.cuts: auto` calibrates.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from testbed.model.arch import build_network  # noqa: E402
from testbed.model.cut_catalogue import build_catalogue, cumulative_ms, split_at  # noqa: E402

TARGET_S = 10.0


def measure(arch: str, size: int) -> dict[str, float]:
    torch.manual_seed(0)
    t0 = time.perf_counter()
    net = build_network(arch, 1000, size).eval()
    t1 = time.perf_counter()
    cat = build_catalogue(net, size)
    t2 = time.perf_counter()
    x = torch.zeros(1, 3, size, size)
    with torch.inference_mode():
        cumulative_ms(cat, x, runs=5)
    t3 = time.perf_counter()
    with torch.inference_mode():
        for name in cat.natural_bottlenecks():
            head = split_at(cat, name)[0]
            for _ in range(7):
                head(x)
    t4 = time.perf_counter()
    return {"cuts": len(cat.cuts), "bottlenecks": len(cat.natural_bottlenecks()), "build_s": t1 - t0,
            "catalogue_s": t2 - t1, "one_pass_s": t3 - t2, "per_cut_s": t4 - t3}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("archs", nargs="*", default=["efficientnet_b0"])
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"host load (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; torch threads 1; {args.size} px")
    print(f"{'arch':<18}{'cuts':>5}{'NB':>4}{'build s':>9}{'catalogue s':>13}{'one pass s':>12}"
          f"{'cat.+cal. s':>13}{'per-cut (old) s':>17}")
    status = 0
    for arch in args.archs:
        r = measure(arch, args.size)
        total = r["catalogue_s"] + r["one_pass_s"]
        print(f"{arch:<18}{r['cuts']:>5}{r['bottlenecks']:>4}{r['build_s']:>9.2f}{r['catalogue_s']:>13.2f}"
              f"{r['one_pass_s']:>12.2f}{total:>13.2f}{r['per_cut_s']:>17.2f}")
        if arch == "efficientnet_b0" and total > TARGET_S:
            print(f"  over the {TARGET_S:g} s target")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
