"""Run a check in a child process under a memory and a time limit, so a regression fails instead of
exhausting the machine (an unbounded allocation is a MemoryError in the child, a hang is a kill).

`limited(fn, *args)` forks (cheap: no interpreter start, no re-import), sets RLIMIT_AS to the parent's
current address space plus `mem_mb` and RLIMIT_CPU to `cpu_s`, runs `fn(*args)` and sends back its return
value or its exception. `preexec(mem_mb, cpu_s)` does the same for a subprocess.Popen of a fresh interpreter.
"""

from __future__ import annotations

import os
import pickle
import resource
import select
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any


class LimitExceeded(AssertionError):
    """The child ran out of time or memory, or died."""


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _set_limits(mem_mb: int, cpu_s: int, relative: bool) -> None:
    mem = mem_mb * 2**20 + (_vm_bytes() if relative else 0)
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))


def preexec(mem_mb: int = 1024, cpu_s: int = 30) -> Callable[[], None]:
    """A preexec_fn for subprocess: a fresh interpreter gets `mem_mb` of address space in all."""
    return lambda: _set_limits(mem_mb, cpu_s, relative=False)


def limited(fn: Callable[..., Any], *args: Any, mem_mb: int = 512, cpu_s: int = 20, wall_s: float = 30.0) -> Any:
    """fn(*args) in a forked child under the limits; re-raises its exception, LimitExceeded when it is killed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(r)
        try:
            _set_limits(mem_mb, cpu_s, relative=True)
            try:
                out: tuple[str, Any] = ("ok", fn(*args))
            except BaseException as e:  # noqa: BLE001 - sent to the parent
                out = ("raised", (e, traceback.format_exc()))
            try:
                data = pickle.dumps(out)
                pickle.loads(data)  # an exception with its own __init__ may not come back
            except Exception:  # noqa: BLE001 - then its text
                data = pickle.dumps(("raised", (RuntimeError(f"{out[1]!r}"), "")))
            with os.fdopen(w, "wb") as f:
                f.write(data)
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + wall_s
    with os.fdopen(r, "rb") as f:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([f], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise LimitExceeded(f"{getattr(fn, '__name__', fn)} ran past {wall_s} s")
            chunk = os.read(f.fileno(), 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        raise LimitExceeded(f"{getattr(fn, '__name__', fn)} died (wait status {status}): out of memory or CPU time")
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "raised":
        exc, text = value
        if isinstance(exc, MemoryError):
            raise LimitExceeded(f"{getattr(fn, '__name__', fn)}: MemoryError under {mem_mb} MB\n{text}")
        raise exc
    return value
