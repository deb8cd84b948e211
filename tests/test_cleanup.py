"""`--cleanup` removes only what dead runs left (throttling.cleanup), never a live run's namespaces; a failed
trace-rate thread fails the run with its reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from throttling.cleanup import kept, owner_pid, sweep_all
from throttling.netns import NetnsError, TraceRates, list_namespaces


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_owner_ids_in_names_and_who_is_kept():
    assert owner_pid("splitbed-1234-d7") == 1234 and owner_pid("splitbed-t99k-c") == 99
    assert owner_pid("splitbed-pool") is None
    assert kept(f"splitbed-{os.getpid()}-c")  # this process is alive
    assert not kept(f"splitbed-{_dead_pid()}-c")
    assert kept("splitbed-nameless")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")
def test_a_sweep_keeps_a_live_owners_namespaces_and_removes_a_dead_ones():
    live, dead = os.getpid(), _dead_pid()
    names = [f"splitbed-{live}-c", f"splitbed-{dead}-c"]
    for n in names:
        subprocess.run(["ip", "netns", "add", n], check=True)
    try:
        removed = {}
        for pid in (live, dead):  # only our own two names: other runs on this host are not touched
            removed.update(sweep_all(prefix=f"splitbed-{pid}-"))
            if pid == live:
                assert removed["network namespaces"] == [] and names[0] in removed["kept (a live run's, or no "
                                                                                   "owner id)"]
        assert removed["network namespaces"] == [names[1]]
        assert names[0] in list_namespaces() and names[1] not in list_namespaces()
    finally:
        subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {n}\n" for n in names),
                       text=True, capture_output=True)


class _FailingTopo:
    def __init__(self):
        self.calls = 0

    def set_rates(self, up, down):
        self.calls += 1
        if self.calls > 2:
            raise NetnsError("tc -n splitbed-1-d0 -batch - failed (Cannot find device)")


def test_a_failed_trace_rate_thread_is_raised_with_its_reason(tmp_path):
    trace = tmp_path / "t.up"
    trace.write_text("\n".join(str(i) for i in range(1, 2000)) + "\n")
    rates = TraceRates(_FailingTopo(), {0: (str(trace), 0.0)}, {}, interval_s=0.02)
    with rates:
        deadline = time.monotonic() + 5
        while rates.error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(NetnsError, match="trace rates stopped updating after 1 updates: NetnsError: tc -n"):
            rates.check()


def test_two_runs_at_once_share_no_name_and_nothing_in_the_root_namespace():
    """Two tc runs on one host: names differ by the driver's pid, and every address and route is set inside
    the run's own namespaces (ip -n NS), so the same subnet serves both."""
    from throttling.netns import NetnsLayout, root_commands

    a, b = NetnsLayout("1111", "10.77.0.0/16", 3), NetnsLayout("2222", "10.77.0.0/16", 3)
    assert not set(a.namespaces()) & set(b.namespaces())
    for cmd in root_commands(a):  # the only batch run in the root namespace: namespaces and veth pairs
        assert cmd[:2] == ["netns", "add"] or (cmd[:2] == ["link", "add"] and cmd.count("netns") == 2), cmd
        assert "addr" not in cmd and "route" not in cmd
