"""`run.py --cleanup`: an idempotent sweep of what a killed run may have left.

Everything splitbed installs is named with the `splitbed-` prefix, so leftovers
are found by name (as Mininet's `mn -c` does) and removed.
"""

from __future__ import annotations

from throttling import cgroup, netns


def sweep_all() -> dict[str, list[str]]:
    out = {"network namespaces": netns.sweep()}
    support = cgroup.detect()
    out["cgroups"] = cgroup.sweep(support=support) if support.writable else []
    return out
