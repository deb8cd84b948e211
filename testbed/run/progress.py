"""What the run shows while it runs: one live line on a terminal, a line every few seconds elsewhere."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from testbed.config.schema import Topology
from testbed.domain.live import since_command_start
from testbed.results.metrics import percentile

PLAIN_EVERY_S = 5.0
RECENT_S = 10.0  # "current p50": requests that finished within the last RECENT_S seconds of wall time


class Progress:
    def __init__(self, topo: Topology, console: Console | None = None):
        self.topo = topo
        self.console = console or Console(stderr=True)
        self._live: Live | None = None
        self._label = self._strategy = ""  # the strategy under way, and it with its number
        self._t_strategy = time.monotonic()
        self._counts: dict[str, int] = {}
        self._e2e: deque[tuple[float, float]] = deque()  # (when drained, e2e_ms) of recent completions
        self._last_plain = 0.0
        self._active: Callable[[], int] = lambda: topo.device_count
        self._faults_now: Callable[[], list[str]] = list  # both replaced per strategy by set_faults
        self.first_answer_s: float | None = None  # since the command started

    def set_faults(self, active_devices: Callable[[], int], active_faults: Callable[[], list[str]]) -> None:
        """Where faults run: how many devices generate frames now, and which faults are under way."""
        self._active, self._faults_now = active_devices, active_faults

    def note(self, message: str) -> None:
        self.console.print(f"[dim]{message}[/dim]")

    def started(self, replicas: list[dict[str, Any]], pools: list[dict[str, Any]]) -> None:
        for r in replicas:
            self.console.print(f"cloud replica {r['replica']}: {r['device_name']} ({r['device']}), "
                               f"ingress {r['host']}:{r['port']}")
        for p in pools:
            cal = ", ".join(f"{k} {v:.1f} ms" for k, v in p["calibration_host_ms"].items())
            cost = f" (calibrated in {p['calibration_s']:.1f} s)" if "calibration_s" in p else ""
            if p.get("torch_in_process") is False:
                cost += "; replayed heads prepared once for the run, no model in this pool"
            self.console.print(f"device pool {p['pool']}: {p['devices']} devices; host compute: {cal}{cost}")
            for cls, m in p.get("device_mechanisms", {}).items():
                self.console.print(f"  {cls}: {m['why']}")
            for cls, c in p.get("cpu_caps", {}).items():
                miss = "" if c["within_tolerance"] else ", NOT within 5%"
                self.console.print(f"  cgroup cap for {cls}: {c['fraction']:.3f} CPU -> {c['achieved_ms']:.1f} ms "
                                   f"(target {c['target_ms']:.1f} ms{miss})")

    def strategy_started(self, strategy: str, index: int) -> None:
        """A new strategy's warm-up begins: counts start again (the console line still says 'phase')."""
        self._label = f"{strategy} ({index + 1}/{len(self.topo.strategies)})"
        self._t_strategy = time.monotonic()
        self._strategy, self._counts = strategy, {}
        self._e2e.clear()
        self._active, self._faults_now = lambda: self.topo.device_count, list
        if self.console.is_terminal and self._live is None:
            self._live = Live(self._line(), console=self.console, refresh_per_second=4, transient=True)
            self._live.start()
        self.console.print(f"phase {self._label}: warm-up {self.topo.warmup_s:g} s, "
                           f"measure {self.topo.duration_s:g} s")

    def update(self, records: list[dict[str, Any]], live: list[dict[str, Any]] | None = None) -> None:
        """Counts from the pools' live counts where given (requests as they end, also those whose record is still
        held for its radio tail), else from this strategy's released records (e.g. the driver's own records)."""
        t = time.monotonic()
        if live is None:
            for r in records:
                if r["strategy"] != self._strategy:  # a previous strategy's record, held back for its radio tail
                    continue
                self._counts[r["status"]] = self._counts.get(r["status"], 0) + 1
                if r["status"] == "completed":
                    self._e2e.append((t, float(r["e2e_ms"])))
        else:
            for pool in live:
                for status, n in pool["counts"].items():
                    self._counts[status] = self._counts.get(status, 0) + n
                self._e2e.extend((t, e) for e in pool["e2e_ms"])
            firsts = [p["first_done_wall"] for p in live if p["first_done_wall"] is not None]
            if firsts and self.first_answer_s is None:
                self.first_answer_s = round(since_command_start(min(firsts)), 2)
                self.console.print(f"first answer {self.first_answer_s:.1f} s after the command started")
        while self._e2e and self._e2e[0][0] < t - RECENT_S:
            self._e2e.popleft()
        if self._live is not None:
            self._live.update(self._line())
        elif time.monotonic() - self._last_plain >= PLAIN_EVERY_S and self._label:
            self._last_plain = time.monotonic()
            self.console.print(self._line())

    def _line(self) -> Text:
        total = self.topo.warmup_s + self.topo.duration_s
        elapsed = min(time.monotonic() - self._t_strategy, total)
        p50 = percentile([e for _, e in self._e2e], 50)
        errors = self._counts.get("failed", 0) + self._counts.get("timed_out", 0)
        faults = self._faults_now()
        return Text(f"  {self._label}: {elapsed:5.1f}/{total:g} s  devices active {self._active()}/"
                    f"{self.topo.device_count}  done {self._counts.get('completed', 0)}  errors {errors} "
                    f"({self._counts.get('failed', 0)} failed, {self._counts.get('timed_out', 0)} timed out)  "
                    f"p50 {p50:.1f} ms (last {RECENT_S:g} s)" + (f"  faults: {', '.join(faults)}" if faults else ""))

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
