"""`run.py --cleanup`: an idempotent sweep of what a killed run left, and only that.

Everything splitbed installs is named with the `splitbed-` prefix and its owner's process id
(`splitbed-<driver pid>-d3`, `splitbed-<driver pid>/pool0-phone`), so leftovers are found by name (as
Mininet's `mn -c` does). A name whose owner is still running belongs to a live run and is kept: a sweep
during a run once removed that run's namespaces. A name without an owner id is kept too (not ours to judge).
"""

from __future__ import annotations

import os
import re

from throttling import cgroup, netns

_OWNER = re.compile(r"^splitbed-[a-z]*(\d+)")


def owner_pid(name: str) -> int | None:
    """The process id in a splitbed name (`splitbed-1234-c` -> 1234); None when it has none."""
    m = _OWNER.match(name)
    return int(m.group(1)) if m else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def kept(name: str) -> bool:
    """A name a sweep must leave: its owner is alive, or it names no owner."""
    pid = owner_pid(name)
    return pid is None or pid_alive(pid)


def sweep_all(prefix: str = netns.PREFIX) -> dict[str, list[str]]:
    """Remove the namespaces and cgroups of dead owners; returns what was removed and what was kept."""
    names = [n for n in netns.list_namespaces() if n.startswith(prefix)]
    live = [n for n in names if kept(n)]
    out = {"network namespaces": netns.delete_namespaces([n for n in names if n not in live])}
    support = cgroup.detect()
    out["cgroups"] = cgroup.sweep(prefix, support=support, keep=kept) if support.writable else []
    out["kept (a live run's, or no owner id)"] = live
    return out
